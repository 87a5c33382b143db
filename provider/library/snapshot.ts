import type { BlockDevice, DriverSnapshot, Inspection, Progress } from "../drivers/contract";
import type { SnapshotRecord, SnapshotStatus, VolumeRecord } from "../persistence/records";
import { ConflictError, InUseError, InvalidInputError, KindlingError, NotFoundError } from "../util/errors";
import { newId, now } from "../util/ids";
import { settleFailedCreate } from "./rollback";
import { parseInput } from "../util/validate";
import type { Backend } from "./backend";
import { updateSnapshotSchema, volumeFromSnapshotSchema, type CreateSnapshotOptions, type UpdateSnapshotOptions, type VolumeFromSnapshotOptions } from "./schemas";
import { Volume } from "./volume";
import { Connection } from "./connection";

type ProgressOpts = { onProgress?: (p: Progress) => void };

/** A point-in-time copy of a volume (cinderlib's Snapshot). */
export class Snapshot {
  constructor(
    readonly backend: Backend,
    private record: SnapshotRecord,
  ) {}

  get id(): string { return this.record.id; }
  get name(): string { return this.record.name; }
  get description(): string { return this.record.description; }
  get volumeId(): string { return this.record.volumeId; }
  get volumeSizeGiB(): number { return this.record.volumeSizeGiB; }
  get status(): SnapshotStatus { return this.record.status; }
  get pool(): string { return this.record.pool; }
  get metadata(): Record<string, string> { return { ...this.record.metadata }; }
  get location(): string | undefined { return this.record.location; }
  get createdAt(): string { return this.record.createdAt; }
  get deleted(): boolean { return this.record.status === "deleted"; }

  toDriver(): DriverSnapshot {
    const r = this.record;
    return { id: r.id, volumeId: r.volumeId, volumeSizeGiB: r.volumeSizeGiB, pool: r.pool, location: r.location };
  }

  /** Takes a snapshot of `volume` (the caller holds the volume's lock). Same rollback as volumes. */
  static async build(volume: Volume, input: CreateSnapshotOptions, opts: ProgressOpts): Promise<Snapshot> {
    const backend = volume.backend;
    const id = input.id ?? newId();
    const record: SnapshotRecord = {
      class: "Snapshot",
      id,
      name: input.name ?? id,
      description: input.description ?? "",
      backend: backend.name,
      volumeId: volume.id,
      volumeSizeGiB: volume.sizeGiB,
      pool: volume.pool,
      status: "creating",
      metadata: input.metadata ?? {},
      createdAt: now(),
      updatedAt: now(),
    };
    const snapshot = new Snapshot(backend, record);
    // As for volumes: a taken id would overwrite that snapshot's record and lose its file.
    if ((await backend.persistence.getSnapshots({ id })).length) {
      throw new ConflictError(`a snapshot with id ${id} already exists`, { field: "id", hint: "choose another id, or leave it out to get a new one" });
    }
    await backend.persistence.setSnapshot(record);
    try {
      const update = await backend.driver.createSnapshot(snapshot.toDriver(), volume.toDriver(), backend.progressFor("snapshot", id, opts.onProgress));
      await snapshot.change({ status: "available", location: update.location });
      return snapshot;
    } catch (err) {
      await settleFailedCreate("snapshot", id, {
        inspect: () => backend.driver.inspectSnapshot(snapshot.toDriver()),
        forget: () => backend.persistence.deleteSnapshot(id),
        markError: () => snapshot.change({ status: "error" }),
      });
      throw err;
    }
  }

  private async change(fields: Partial<SnapshotRecord>): Promise<void> {
    this.record = { ...this.record, ...fields, updatedAt: now() };
    await this.backend.persistence.setSnapshot(this.record);
  }

  async save(): Promise<void> {
    await this.backend.persistence.setSnapshot(this.record);
  }

  async refresh(): Promise<this> {
    const [found] = await this.backend.persistence.getSnapshots({ id: this.id });
    this.record = found ?? { ...this.record, status: "deleted" };
    return this;
  }

  private lock<T>(work: () => Promise<T>, opts: { allowDeleted?: boolean } = {}): Promise<T> {
    return this.backend.locks.run(this.id, async () => {
      await this.refresh();
      // As for volumes: a stale handle must not write a deleted snapshot's record back.
      if (this.status === "deleted" && !opts.allowDeleted) {
        throw new NotFoundError("snapshot", this.id, { hint: "it was deleted" });
      }
      return work();
    });
  }

  async volume(): Promise<Volume> {
    return this.backend.getVolume(this.volumeId);
  }

  /** Exports the snapshot read-only over nbd (served by `kindling nbd serve`). */
  async connect(protocol: string, connector: Record<string, unknown> = {}): Promise<Connection> {
    this.backend.validateConnector(protocol, connector);
    return this.lock(() => Connection.buildForSnapshot(this, protocol, connector));
  }

  async connections(): Promise<Connection[]> {
    return (await this.backend.connections(this.volumeId)).filter((c) => c.snapshotId === this.id);
  }

  async disconnect(): Promise<void> {
    for (const connection of await this.connections()) await connection.disconnect();
  }

  /** Deletes the snapshot (refused while exported); deleting twice is fine. */
  async delete(): Promise<void> {
    await this.lock(async () => {
      const exported = await this.connections();
      if (exported.length) throw new InUseError(`snapshot ${this.name} is exported (${exported.map((c) => c.protocol).join(", ")})`, { hint: "disconnect it first" });
      const previous = this.status;
      const existed = previous !== "deleted";
      if (existed) await this.change({ status: "deleting" });
      try {
        await this.backend.driver.deleteSnapshot(this.toDriver());
      } catch (err) {
        // A refusal (clones depend on it, something holds it open) changed nothing: the object
        // stays usable. Anything else may have removed part of it.
        const refused = err instanceof KindlingError && err.code === "IN_USE";
        if (existed) await this.change({ status: refused ? previous : "error_deleting" });
        throw err;
      }
      await this.backend.persistence.deleteSnapshot(this.id);
      this.record = { ...this.record, status: "deleted", updatedAt: now() };
    }, { allowDeleted: true });
  }

  /** A new volume holding the data as it was when the snapshot was taken. */
  async createVolume(options: VolumeFromSnapshotOptions = {}, opts: ProgressOpts = {}): Promise<Volume> {
    const input = parseInput(volumeFromSnapshotSchema, options);
    return this.lock(async () => {
      if (this.status !== "available") throw new InvalidInputError("snapshot", `snapshot ${this.name} is ${this.status}, not available`);
      const sizeGiB = input.sizeGiB ?? this.volumeSizeGiB;
      if (sizeGiB < this.volumeSizeGiB) throw new InvalidInputError("sizeGiB", `must be at least the snapshot's size (${this.volumeSizeGiB} GiB)`);
      await this.backend.checkPlacement(this.pool, sizeGiB);
      // The new volume takes the parent's specs, as cinderlib does.
      const [parent] = await this.backend.persistence.getVolumes({ id: this.volumeId });
      const id = input.id ?? newId();
      const record: VolumeRecord = {
        class: "Volume",
        id,
        name: input.name ?? id,
        description: input.description ?? "",
        backend: this.backend.name,
        pool: this.pool,
        sizeGiB,
        status: "creating",
        extraSpecs: { ...(parent?.extraSpecs ?? {}) },
        qosSpecs: { ...(parent?.qosSpecs ?? {}) },
        metadata: input.metadata ?? {},
        snapshotId: this.id,
        createdAt: now(),
        updatedAt: now(),
      };
      const source = this.toDriver();
      return Volume.build(this.backend, record, (v) =>
        this.backend.driver.createVolumeFromSnapshot(v, source, this.backend.progressFor("create-from-snapshot", id, opts.onProgress)));
    });
  }

  /** Changes the name, description or metadata; the data never changes. */
  async update(options: UpdateSnapshotOptions): Promise<void> {
    const input = parseInput(updateSnapshotSchema, options);
    await this.lock(() => this.change(Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined))));
  }

  async inspect(): Promise<Inspection> {
    return this.backend.driver.inspectSnapshot(this.toDriver());
  }

  /** Read-only byte access to the snapshot's data. */
  async open(): Promise<BlockDevice> {
    return this.backend.driver.open({ kind: "snapshot", snapshot: this.toDriver() }, { readOnly: true });
  }

  /** The record as plain JSON (what persistence stores and Pulumi state carries). */
  dump(): SnapshotRecord {
    return JSON.parse(JSON.stringify(this.record)) as SnapshotRecord;
  }

  static load(backend: Backend, record: SnapshotRecord): Snapshot {
    if (record?.class !== "Snapshot") throw new InvalidInputError("class", "not a Snapshot record");
    return new Snapshot(backend, structuredClone(record));
  }

  toJSON(): SnapshotRecord {
    return this.dump();
  }
}
