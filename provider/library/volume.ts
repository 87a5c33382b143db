import type { BlockDevice, DriverVolume, Inspection, ModelUpdate, Progress } from "../drivers/contract";
import type { VolumeRecord, VolumeStatus } from "../persistence/records";
import { ConflictError, InUseError, InvalidInputError, KindlingError, NotFoundError } from "../util/errors";
import { newId, now } from "../util/ids";
import { parseInput } from "../util/validate";
import { sizeGiBSchema } from "../util/names";
import { GiB } from "../util/sizes";
import { localConnector, refreshLocalSize } from "../exports/local";
import { settleFailedCreate } from "./rollback";
import type { Backend } from "./backend";
import {
  cloneVolumeSchema, connectOptionsSchema, connectorSchema, createSnapshotSchema, updateVolumeSchema,
  type CloneVolumeOptions, type ConnectOptions, type CreateSnapshotOptions, type UpdateVolumeOptions,
} from "./schemas";
import { Snapshot } from "./snapshot";
import { Connection } from "./connection";

type ProgressOpts = { onProgress?: (p: Progress) => void };

/**
 * A volume on a backend (cinderlib's Volume). Holds its record; every change is written to
 * persistence before the method returns. Statuses follow cinderlib: creating -> available,
 * in-use while connected, extending, deleting -> deleted, error, error_deleting.
 */
export class Volume {
  constructor(
    readonly backend: Backend,
    private record: VolumeRecord,
  ) {}

  get id(): string { return this.record.id; }
  get name(): string { return this.record.name; }
  get description(): string { return this.record.description; }
  get sizeGiB(): number { return this.record.sizeGiB; }
  get status(): VolumeStatus { return this.record.status; }
  get pool(): string { return this.record.pool; }
  get extraSpecs(): Record<string, string> { return { ...this.record.extraSpecs }; }
  get qosSpecs(): Record<string, string> { return { ...this.record.qosSpecs }; }
  get metadata(): Record<string, string> { return { ...this.record.metadata }; }
  get sourceVolumeId(): string | undefined { return this.record.sourceVolumeId; }
  get snapshotId(): string | undefined { return this.record.snapshotId; }
  get location(): string | undefined { return this.record.location; }
  get createdAt(): string { return this.record.createdAt; }
  get deleted(): boolean { return this.record.status === "deleted"; }

  /** What the driver needs to know of this volume. */
  toDriver(): DriverVolume {
    const r = this.record;
    return { id: r.id, pool: r.pool, sizeGiB: r.sizeGiB, extraSpecs: { ...r.extraSpecs }, qosSpecs: { ...r.qosSpecs }, location: r.location, sourceVolumeId: r.sourceVolumeId };
  }

  /** Records a new volume as "creating", runs the driver's create-like call, marks it available. */
  static async build(backend: Backend, record: VolumeRecord, create: (v: DriverVolume) => Promise<ModelUpdate>): Promise<Volume> {
    const volume = new Volume(backend, record);
    // A caller-chosen id already in use must be refused here: setVolume replaces by id, so the
    // other volume's record would be overwritten, and the rollback below (seeing no new file)
    // would forget it, or worse, the driver's cleanup would remove its file.
    if ((await backend.persistence.getVolumes({ id: record.id })).length) {
      throw new ConflictError(`a volume with id ${record.id} already exists`, { field: "id", hint: "choose another id, or leave it out to get a new one" });
    }
    await backend.persistence.setVolume(record);
    try {
      const update = await create(volume.toDriver());
      await volume.change({ status: "available", location: update.location ?? record.location });
      return volume;
    } catch (err) {
      await settleFailedCreate("volume", record.id, {
        inspect: () => backend.driver.inspect(volume.toDriver()),
        forget: () => backend.persistence.deleteVolume(record.id),
        markError: () => volume.change({ status: "error" }),
      });
      throw err;
    }
  }

  private async change(fields: Partial<VolumeRecord>): Promise<void> {
    this.record = { ...this.record, ...fields, updatedAt: now() };
    await this.backend.persistence.setVolume(this.record);
  }

  /** Writes this object's record to persistence (used by `load(..., { save: true })`). */
  async save(): Promise<void> {
    await this.backend.persistence.setVolume(this.record);
  }

  /** Re-reads the record from persistence; a volume deleted elsewhere reads as deleted. */
  async refresh(): Promise<this> {
    const [found] = await this.backend.persistence.getVolumes({ id: this.id });
    this.record = found ?? { ...this.record, status: "deleted" };
    return this;
  }

  private lock<T>(work: () => Promise<T>, opts: { allowDeleted?: boolean } = {}): Promise<T> {
    return this.backend.locks.run(this.id, async () => {
      await this.refresh();
      // A handle to a volume deleted meanwhile (through another handle or process): going on
      // would write its record again, a "deleted" ghost that backend.volumes() lists forever.
      if (this.status === "deleted" && !opts.allowDeleted) {
        throw new NotFoundError("volume", this.id, { hint: "it was deleted" });
      }
      return work();
    });
  }

  async snapshots(): Promise<Snapshot[]> {
    return this.backend.snapshots(this.id);
  }

  async connections(): Promise<Connection[]> {
    return this.backend.connections(this.id);
  }

  /** The connection that holds a device on this host, if any. */
  async localAttachment(): Promise<Connection | undefined> {
    return (await this.connections()).find((c) => c.attached);
  }

  /** Deletes the volume; refused while it has snapshots or connections. Deleting twice is fine. */
  async delete(): Promise<void> {
    await this.lock(async () => {
      const snapshots = await this.snapshots();
      if (snapshots.length) {
        throw new InUseError(`volume ${this.name} has ${snapshots.length} snapshot(s): ${snapshots.map((s) => s.name).join(", ")}`, { hint: "delete them first" });
      }
      const connections = await this.connections();
      if (connections.length) {
        const where = connections.map((c) => c.devicePath ?? c.protocol).join(", ");
        throw new InUseError(`volume ${this.name} is connected (${where})`, { hint: `detach or disconnect it first (\`kindling detach ${this.name}\`)` });
      }
      const previous = this.status;
      const existed = previous !== "deleted";
      if (existed) await this.change({ status: "deleting" });
      try {
        await this.backend.driver.deleteVolume(this.toDriver());
      } catch (err) {
        // A refusal (clones depend on it, something holds it open) changed nothing: the object
        // stays usable. Anything else may have removed part of it.
        const refused = err instanceof KindlingError && err.code === "IN_USE";
        if (existed) await this.change({ status: refused ? previous : "error_deleting" });
        throw err;
      }
      await this.backend.persistence.deleteVolume(this.id);
      this.record = { ...this.record, status: "deleted", updatedAt: now() };
    }, { allowDeleted: true });
  }

  /** Grows the volume (never shrinks). An attached device shows the new size. Returns bytes. */
  async extend(sizeGiB: number): Promise<number> {
    return this.lock(async () => {
      const size = parseInput(sizeGiBSchema, sizeGiB, "sizeGiB");
      if (size <= this.sizeGiB) {
        throw new InvalidInputError("sizeGiB", `must be larger than the current size (${this.sizeGiB} GiB); volumes only grow`);
      }
      await this.backend.checkPlacement(this.pool, size);
      const previous = this.status;
      await this.change({ status: "extending", previousStatus: previous });
      try {
        await this.backend.driver.extendVolume(this.toDriver(), size);
      } catch (err) {
        await this.change({ status: previous, previousStatus: undefined });
        throw err;
      }
      await this.change({ sizeGiB: size, status: previous, previousStatus: undefined });
      for (const connection of await this.connections()) {
        if (connection.devicePath) await refreshLocalSize(connection.connectionInfo, connection.devicePath);
      }
      return size * GiB;
    });
  }

  /** Changes what can change in place: name, description, metadata, QoS and extra specs. */
  async update(options: UpdateVolumeOptions): Promise<void> {
    const input = parseInput(updateVolumeSchema, options);
    if (input.qosSpecs) this.backend.driver.validateQosSpecs(input.qosSpecs);
    if (input.extraSpecs) this.backend.driver.validateExtraSpecs(input.extraSpecs);
    await this.lock(async () => {
      // Limits enforced by the storage change there first: the record never claims what is not so.
      if (input.qosSpecs && this.backend.driver.applyQos) await this.backend.driver.applyQos(this.toDriver(), input.qosSpecs);
      await this.change(Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)));
    });
  }

  /** A new volume with this one's data, specs and pool; it may be larger. */
  async clone(options: CloneVolumeOptions = {}, opts: ProgressOpts = {}): Promise<Volume> {
    const input = parseInput(cloneVolumeSchema, options);
    return this.lock(async () => {
      const sizeGiB = input.sizeGiB ?? this.sizeGiB;
      if (sizeGiB < this.sizeGiB) throw new InvalidInputError("sizeGiB", `must be at least the source's size (${this.sizeGiB} GiB)`);
      await this.backend.checkPlacement(this.pool, sizeGiB);
      const id = input.id ?? newId();
      const record: VolumeRecord = {
        ...this.record,
        id,
        name: input.name ?? id,
        description: input.description ?? this.description,
        metadata: input.metadata ?? this.metadata,
        sizeGiB,
        status: "creating",
        previousStatus: undefined,
        sourceVolumeId: this.id,
        snapshotId: undefined,
        location: undefined,
        createdAt: now(),
        updatedAt: now(),
      };
      const source = this.toDriver();
      return Volume.build(this.backend, record, (v) => this.backend.driver.cloneVolume(v, source, this.backend.progressFor("clone", id, opts.onProgress)));
    });
  }

  async createSnapshot(options: CreateSnapshotOptions = {}, opts: ProgressOpts = {}): Promise<Snapshot> {
    const input = parseInput(createSnapshotSchema, options);
    return this.lock(() => Snapshot.build(this, input, opts));
  }

  /** Makes the volume reachable over `protocol` for the consumer `connector` describes. */
  async connect(protocol: string, connector: Record<string, unknown> = {}, options: ConnectOptions = {}): Promise<Connection> {
    const parsedConnector = parseInput(connectorSchema, connector, "connector");
    const input = parseInput(connectOptionsSchema, options);
    this.backend.validateConnector(protocol, parsedConnector);
    return this.lock(() => Connection.build(this, protocol, parsedConnector, input));
  }

  /** Called by Connection when the set of connections changed. */
  async connectionsChanged(): Promise<void> {
    // Exports of the volume's snapshots do not make the volume itself in use.
    const count = (await this.connections()).filter((c) => !c.snapshotId).length;
    const status: VolumeStatus = count ? "in-use" : "available";
    if (this.status !== status && (this.status === "available" || this.status === "in-use")) await this.change({ status });
  }

  /** Removes one connection, or all of them (detaching first where attached). */
  async disconnect(connection?: Connection): Promise<void> {
    const targets = connection ? [connection] : await this.connections();
    for (const c of targets) await c.disconnect();
  }

  /**
   * Local attach: a block device on this host. Returns the connection holding its path. For
   * backends without a local path it goes over NBD, so `kindling nbd serve` must be running.
   */
  async attach(opts: { readOnly?: boolean } = {}): Promise<Connection> {
    // Each driver names its way to a device here; the others go through kindling's NBD server.
    const protocol = this.backend.driver.attachProtocol ?? "nbd";
    const connector = localConnector();
    this.backend.validateConnector(protocol, connector);
    // The check, the connection and the device are made under the volume's lock: otherwise two
    // concurrent attach() calls both pass the check, losetup --nooverlap hands both the same
    // loop device, and the first detach takes it away from the other.
    const { connection, error } = await this.lock(async () => {
      const existing = await this.localAttachment();
      if (existing) throw new InUseError(`volume ${this.name} is already attached at ${existing.devicePath}`, { hint: "detach it first" });
      const made = await Connection.build(this, protocol, connector, { attachMode: opts.readOnly ? "ro" : "rw" });
      try {
        await made.attach();
        return { connection: made, error: undefined };
      } catch (err) {
        return { connection: made, error: err as unknown };
      }
    });
    if (error !== undefined) {
      // disconnect() takes the volume's lock itself, so it runs after the lock is released.
      await connection.disconnect().catch(() => undefined);
      throw error;
    }
    return connection;
  }

  /** Releases the local device and its connection. */
  async detach(): Promise<void> {
    const attached = await this.localAttachment();
    if (!attached) throw new InvalidInputError("volume", `volume ${this.name} is not attached on this host`);
    await attached.detach();
    await attached.disconnect();
  }

  /** What the backend really holds for this volume (for refresh and drift checks). */
  async inspect(): Promise<Inspection> {
    return this.backend.driver.inspect(this.toDriver());
  }

  /** Byte-level access through the driver. */
  async open(opts: { readOnly?: boolean } = {}): Promise<BlockDevice> {
    return this.backend.driver.open({ kind: "volume", volume: this.toDriver() }, { readOnly: opts.readOnly ?? false });
  }

  /** The record as plain JSON (what persistence stores and Pulumi state carries). */
  dump(): VolumeRecord {
    return JSON.parse(JSON.stringify(this.record)) as VolumeRecord;
  }

  static load(backend: Backend, record: VolumeRecord): Volume {
    if (record?.class !== "Volume") throw new InvalidInputError("class", "not a Volume record");
    return new Volume(backend, structuredClone(record));
  }

  toJSON(): VolumeRecord {
    return this.dump();
  }
}
