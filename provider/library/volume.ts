import type { BlockDevice, DriverVolume, Inspection, ModelUpdate, Progress } from "../drivers/contract";
import { expansionReport, type ExpansionReport } from "./expansion";
import type { ConnectionInfo, ImageProvenance, Lease, VolumeRecord, VolumeStatus } from "../persistence/records";
import { ConflictError, InUseError, InvalidInputError, KindlingError, NotFoundError, UnsafeFileError, errorMessage } from "../util/errors";
import { newId, now } from "../util/ids";
import { parseInput } from "../util/validate";
import { sizeGiBSchema } from "../util/names";
import { GiB } from "../util/sizes";
import { logger } from "../util/log";
import { localConnector, refreshLocalSize } from "../attach";
import { devicesBacking, findsUnrecordedDevices, releaseLeftovers } from "../attach/leftovers";
import { DEFAULT_STALE_MS, WriterLocks, liveClaims, lockByHand, readWriterLock, releaseWriterLock, type WriterHolder } from "./export-claims";
import { describeProcess, thisProcess } from "../util/owner";
import { checkDownloadTarget, writeImage, type DownloadOptions, type DownloadResult } from "./download";
import { handHolder, heldBy } from "./writer-refusals";
import { Tracked } from "./tracked";
import type { Backend } from "./backend";
import {
  cloneVolumeSchema, connectOptionsSchema, connectorSchema, createSnapshotSchema, updateVolumeSchema,
  type CloneVolumeOptions, type ConnectOptions, type CreateSnapshotOptions, type UpdateVolumeOptions,
} from "./schemas";
import { Snapshot } from "./snapshot";
import { Connection } from "./connection";
import type { ImageService, UploadResult } from "../images/contract";
import type { CopyToImageOptions } from "./images";

// Image copies load the image pipeline when one is made, not with every volume.
const imagesModule = () => require("./images") as typeof import("./images");

type ProgressOpts = { onProgress?: (p: Progress) => void };

/** Statuses in which a volume's data is whole and settled: it may be copied, connected, grown. */
const USABLE: readonly VolumeStatus[] = ["available", "in-use"];

/**
 * A volume on a backend (cinderlib's Volume). Holds its record; every change is written to
 * persistence before the method returns. Statuses follow cinderlib: creating -> available,
 * in-use while connected, extending, deleting -> deleted, error, error_deleting. Each operation
 * holds the volume's lease (see Tracked), so operations from different processes on one volume
 * run one after the other, and one that a crash interrupted is finished or rolled back first.
 */
export class Volume extends Tracked<"volume"> {
  protected readonly kind = "volume";

  constructor(backend: Backend, record: VolumeRecord) {
    super(backend, record);
  }

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
  /** Where its first bytes came from, when it was made from an image (or from a volume or snapshot that was). */
  get image(): ImageProvenance | undefined { return this.record.image && structuredClone(this.record.image); }
  get location(): string | undefined { return this.record.location; }
  get createdAt(): string { return this.record.createdAt; }
  get deleted(): boolean { return this.record.status === "deleted"; }
  get gone(): boolean { return this.deleted; }

  protected describe(): string {
    return `volume ${this.name}`;
  }
  protected notFound(): KindlingError {
    return new NotFoundError("volume", this.name === this.id ? this.id : this.name, { hint: "it was deleted" });
  }
  protected interrupted(record: VolumeRecord): boolean {
    return record.status === "creating" || record.status === "extending" || record.status === "deleting";
  }
  protected markGone(): void {
    this.record = { ...this.record, status: "deleted", lease: undefined };
  }

  /** What the driver needs to know of this volume. */
  toDriver(): DriverVolume {
    const r = this.record;
    return { id: r.id, pool: r.pool, sizeGiB: r.sizeGiB, extraSpecs: { ...r.extraSpecs }, qosSpecs: { ...r.qosSpecs }, location: r.location, sourceVolumeId: r.sourceVolumeId };
  }

  /**
   * Records a new volume as "creating" (holding its lease), runs the driver's create-like call,
   * marks it available. A caller-chosen id already in use is refused before anything is made.
   */
  static async build(backend: Backend, record: VolumeRecord, create: (v: DriverVolume) => Promise<ModelUpdate>): Promise<Volume> {
    const volume = new Volume(backend, record);
    await volume.make(() => create(volume.toDriver()), () => backend.driver.inspect(volume.toDriver()));
    return volume;
  }

  /** A dead holder's operation, finished or rolled back from what the backend holds. */
  protected async repair(previous: VolumeRecord, lease: Lease | undefined): Promise<"kept" | "gone"> {
    if (previous.status === "creating" || previous.status === "deleting") {
      // A create never finished is undone (the object was never available to anyone); a
      // delete never finished is completed. Either way the storage goes, then the record.
      await this.backend.driver.deleteVolume(this.toDriver());
      await this.forget();
      return "gone";
    }
    if (previous.status === "extending") {
      const back = previous.previousStatus && USABLE.includes(previous.previousStatus) ? previous.previousStatus : "available";
      const wanted = typeof lease?.intent?.sizeGiB === "number" ? lease.intent.sizeGiB : (await this.inspect()).sizeGiB;
      if (wanted !== undefined && wanted > previous.sizeGiB) {
        try {
          // Finishes the grow and any preallocation the dead holder did not get to.
          await this.backend.driver.extendVolume(this.toDriver(), wanted);
          await this.change({ sizeGiB: wanted, status: back, previousStatus: undefined });
          return "kept";
        } catch (err) {
          logger().warn({ volume: this.id, err: (err as Error).message }, "could not finish an interrupted extend; the volume keeps its recorded size");
        }
      }
      await this.change({ status: back, previousStatus: undefined });
      return "kept";
    }
    // The dead holder may have been between a connection's record and the volume's status (a
    // connect, a disconnect, an attach): settle the connections and say again what they make.
    await this.settledConnections();
    await this.connectionsChanged();
    return "kept";
  }

  /** Repairs what a dead holder left of the volume and of its connections; true when it is still there. */
  override async settle(): Promise<boolean> {
    if (!(await super.settle())) return false;
    if ((await this.connections()).some((c) => c.busy?.stale)) {
      await this.leased("repair", async () => {
        await this.settledConnections();
        await this.connectionsChanged();
      }, { ifGone: () => undefined });
    }
    return !this.gone;
  }

  /** Writes this object's record to persistence (used by `load(..., { save: true })`). */
  async save(): Promise<void> {
    await this.backend.persistence.setVolume(this.record);
  }

  async snapshots(): Promise<Snapshot[]> {
    return this.backend.snapshots(this.id);
  }

  async connections(): Promise<Connection[]> {
    return this.backend.connections(this.id);
  }

  /** The connections, once any a dead holder left half made are settled. */
  private async settledConnections(): Promise<Connection[]> {
    const out: Connection[] = [];
    for (const connection of await this.connections()) {
      if (await connection.settle()) out.push(connection);
    }
    return out;
  }

  /** The connection that holds a device on this host, if any. */
  async localAttachment(): Promise<Connection | undefined> {
    return (await this.connections()).find((c) => c.attachedHere);
  }

  private requireUsable(doing: string): void {
    if (!USABLE.includes(this.status)) {
      throw new InvalidInputError("volume", `volume ${this.name} is ${this.status}; only available or in-use volumes can be ${doing}`, {
        hint: this.status === "error" ? "delete it and make it again" : undefined,
      });
    }
  }

  /** Deletes the volume; refused while it has snapshots, connections or live exports. Deleting twice is fine. */
  async delete(): Promise<void> {
    await this.leased("delete", async () => {
      const snapshots: Snapshot[] = [];
      for (const snapshot of await this.snapshots()) if (await snapshot.settle()) snapshots.push(snapshot);
      if (snapshots.length) {
        throw new InUseError(`volume ${this.name} has ${snapshots.length} snapshot(s): ${snapshots.map((s) => s.name).join(", ")}`, { hint: "delete them first" });
      }
      const connections = await this.settledConnections();
      if (connections.length) {
        const where = connections.map((c) => c.devicePath ?? c.protocol).join(", ");
        throw new InUseError(`volume ${this.name} is connected (${where})`, { hint: `disconnect it first: \`kindling disconnect ${this.name}\` releases its devices and connections` });
      }
      const served = await liveClaims(this.backend.persistence, { volumeId: this.id });
      if (served.length) {
        throw new InUseError(`volume ${this.name} is still served over NBD by ${served.map((c) => describeProcess(c.owner)).join(", ")}`, {
          hint: "its server closes the export within a second of `kindling disconnect`; try again then",
        });
      }
      // Locked by hand (as swiftnbd-ctl's delete, which refuses a locked container) or being downloaded.
      const writer = await readWriterLock(this.backend.persistence, this.id);
      if (writer?.holder?.live) throw heldBy(this.name, writer.holder, "deleted");
      // A device left by a crashed attach would keep the file's blocks (and its data) alive.
      if (findsUnrecordedDevices(this.backend.driver.attachProtocol)) await this.releaseDevices([]);
      const previous = this.status;
      await this.change({ status: "deleting" });
      try {
        await this.removeStorage();
      } catch (err) {
        // A refusal (clones depend on it, something holds it open) changed nothing: the object
        // stays usable. Anything else may have removed part of it.
        const refused = err instanceof KindlingError && err.code === "IN_USE";
        await this.change({ status: refused ? previous : "error_deleting" });
        throw err;
      }
      await this.forget();
      // An abandoned writer lock (its holder died) would outlive the volume in the records.
      if (writer) await releaseWriterLock(this.backend.persistence, this.id, writer.value).catch(() => undefined);
    }, { ifGone: () => undefined, freeing: true });
  }

  /**
   * The driver's delete. A clone's holds its source's lease too: drivers whose clones share
   * data with their source (rbd) change the source when a clone goes (they drop the snapshot it
   * was made from), which must not run beside an operation on the source in another process.
   */
  private async removeStorage(): Promise<void> {
    const remove = () => this.backend.driver.deleteVolume(this.toDriver());
    const [sourceRecord] = this.sourceVolumeId ? await this.backend.persistence.getVolumes({ id: this.sourceVolumeId }) : [];
    if (!sourceRecord) return remove();
    const source = new Volume(this.backend, sourceRecord);
    await source.leased("delete-clone", remove, { ifGone: remove });
  }

  /** Grows the volume (never shrinks). An attached device shows the new size. Returns bytes. */
  async extend(sizeGiB: number): Promise<number> {
    const size = parseInput(sizeGiBSchema, sizeGiB, "sizeGiB");
    return this.leased("extend", async () => {
      this.requireUsable("extended");
      // The same extend run again after it was cut short: the repair just finished it.
      if (size === this.sizeGiB && this.repairedNow?.operation === "extend" && this.repairedNow.intent?.sizeGiB === size) return size * GiB;
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
    }, { intent: { sizeGiB: size } });
  }

  /**
   * What each consumer must do to see the volume's size now (after `extend`): a device kindling
   * attached here already shows it; a hypervisor needs block_resize, or over NBD a reconnect.
   */
  async expansion(): Promise<ExpansionReport> {
    return expansionReport(this.sizeGiB, await this.connections());
  }

  /** Changes what can change in place: name, description, metadata, QoS and extra specs. */
  async update(options: UpdateVolumeOptions): Promise<void> {
    const input = parseInput(updateVolumeSchema, options);
    if (input.qosSpecs) this.backend.driver.validateQosSpecs(input.qosSpecs);
    if (input.extraSpecs) this.backend.driver.validateExtraSpecs(input.extraSpecs);
    await this.leased("update", async () => {
      // Limits enforced by the storage change there first: the record never claims what is not so.
      if (input.qosSpecs && this.backend.driver.applyQos) await this.backend.driver.applyQos(this.toDriver(), input.qosSpecs);
      await this.change(Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) as Partial<VolumeRecord>);
    });
  }

  /** A new volume with this one's data, specs and pool; it may be larger. */
  async clone(options: CloneVolumeOptions = {}, opts: ProgressOpts = {}): Promise<Volume> {
    const input = parseInput(cloneVolumeSchema, options);
    return this.leased("clone", async () => {
      this.requireUsable("cloned");
      const sizeGiB = input.sizeGiB ?? this.sizeGiB;
      if (sizeGiB < this.sizeGiB) throw new InvalidInputError("sizeGiB", `must be at least the source's size (${this.sizeGiB} GiB)`);
      await this.backend.checkPlacement(this.pool, sizeGiB);
      const id = input.id ?? newId();
      const record: VolumeRecord = {
        class: "Volume",
        id,
        name: input.name ?? id,
        description: input.description ?? this.description,
        backend: this.backend.name,
        pool: this.pool,
        sizeGiB,
        status: "creating",
        extraSpecs: this.extraSpecs,
        qosSpecs: this.qosSpecs,
        metadata: input.metadata ?? this.metadata,
        sourceVolumeId: this.id,
        ...(this.record.image ? { image: this.record.image } : {}),
        createdAt: now(),
        updatedAt: now(),
      };
      const source = this.toDriver();
      return Volume.build(this.backend, record, (v) => this.backend.driver.cloneVolume(v, source, this.backend.progressFor("clone", id, opts.onProgress)));
    });
  }

  /**
   * A new image in `service` with the volume's bytes (raw unless `options.diskFormat` says
   * otherwise), in use or not: taken from a temporary snapshot (so the image is one point in
   * time while writes go on), which is deleted afterwards whatever happened. It carries the
   * volume's metadata and `kindling_volume_id`.
   */
  async copyToImage(service: ImageService, options: CopyToImageOptions, opts: ProgressOpts = {}): Promise<UploadResult> {
    const o = parseInput(imagesModule().copyStorageToImageSchema, options);
    this.requireUsable("copied to an image");
    const snapshot = await this.createSnapshot({ name: `image-copy-${newId().slice(0, 8)}`, description: `temporary: the copy of volume ${this.name} to image ${o.name}` });
    try {
      await snapshot.refresh();
      const properties = { ...this.metadata, kindling_volume_id: this.id };
      return await snapshot.copyBytesToImage(service, o, { what: `volume ${this.name}`, properties, progressId: this.id, onProgress: opts.onProgress });
    } finally {
      await snapshot.delete();
    }
  }

  async createSnapshot(options: CreateSnapshotOptions = {}, opts: ProgressOpts = {}): Promise<Snapshot> {
    const input = parseInput(createSnapshotSchema, options);
    return this.leased("snapshot", async () => {
      this.requireUsable("snapshotted");
      return Snapshot.build(this, input, opts);
    });
  }

  /** Makes the volume reachable over `protocol` for the consumer `connector` describes. */
  async connect(protocol: string, connector: Record<string, unknown> = {}, options: ConnectOptions = {}): Promise<Connection> {
    const parsedConnector = parseInput(connectorSchema, connector, "connector");
    const input = parseInput(connectOptionsSchema, options);
    this.backend.validateConnector(protocol, parsedConnector);
    return this.leased("connect", async () => {
      this.requireUsable("connected");
      const connection = await Connection.build(this, protocol, parsedConnector, input);
      await this.connectionsChanged();
      return connection;
    });
  }

  /** Called, holding the lease, when the set of connections changed. */
  private async connectionsChanged(): Promise<void> {
    // Exports of the volume's snapshots do not make the volume itself in use.
    const count = (await this.connections()).filter((c) => !c.snapshotId).length;
    const status: VolumeStatus = count ? "in-use" : "available";
    if (this.status !== status && USABLE.includes(this.status)) await this.change({ status });
  }

  /** Removes one connection, or all of them (detaching first where attached). */
  async disconnect(connection?: Connection): Promise<void> {
    await this.leased("disconnect", async () => {
      const targets = connection ? [connection] : await this.settledConnections();
      for (const c of targets) await c.end();
      // A device a crash left without a record (or a record without its device) goes too.
      if (!connection && findsUnrecordedDevices(this.backend.driver.attachProtocol)) await this.releaseDevices([]);
      await this.connectionsChanged();
    }, {
      freeing: true,
      // The volume went first (a forced record removal): still end what is left of the connections.
      ifGone: async () => {
        for (const c of connection ? [connection] : await this.connections()) await c.end();
      },
    });
  }

  /**
   * Local attach: a block device on this host. Returns the connection holding its path. For
   * backends without a local path it goes over NBD, so `kindling nbd serve` must be running.
   * One attachment per volume per host, across processes: the check, the connection and the
   * device are made holding the volume's lease, and the connection is recorded (as pending,
   * under its own lease) before the device is made, so a crash in between leaks nothing.
   */
  async attach(opts: { readOnly?: boolean } = {}): Promise<Connection> {
    // Each driver names its way to a device here; the others go through kindling's NBD server.
    const protocol = this.backend.driver.attachProtocol ?? "nbd";
    const connector = localConnector();
    this.backend.validateConnector(protocol, connector);
    return this.leased("attach", async () => {
      this.requireUsable("attached");
      await this.assertNotAttachedHere();
      const connection = await Connection.build(this, protocol, connector, { attachMode: opts.readOnly ? "ro" : "rw", attachedHost: connector.host as string, attaching: true });
      await this.connectionsChanged();
      return connection;
    });
  }

  /** Local attach of a connection made earlier (a Pulumi Attachment with attachLocally). */
  async attachConnection(connection: Connection): Promise<string> {
    return this.leased("attach", async () => {
      await connection.refresh();
      if (connection.gone) throw new NotFoundError("connection", connection.id, { hint: "it was disconnected" });
      await this.assertNotAttachedHere(connection.id);
      return connection.makeDevice();
    });
  }

  /** One device per volume per host: refuses when a connection (or an unrecorded device) has one here. */
  private async assertNotAttachedHere(except?: string): Promise<void> {
    const existing = (await this.settledConnections()).find((c) => c.attachedHere && c.id !== except);
    if (existing) {
      throw new InUseError(`volume ${this.name} is already attached on this host at ${existing.devicePath}`, { hint: `detach it first (\`kindling detach ${this.name}\`)` });
    }
    if (!findsUnrecordedDevices(this.backend.driver.attachProtocol)) return;
    const info = await this.localInfo();
    const unrecorded = info ? await devicesBacking(info) : [];
    if (unrecorded.length) {
      throw new InUseError(`volume ${this.name} is already attached at ${unrecorded.join(", ")}, and no connection records it`, {
        hint: `\`kindling disconnect ${this.name}\` releases it`,
      });
    }
  }

  /** Releases the local device and its connection. */
  async detach(): Promise<void> {
    await this.leased("detach", async () => {
      const attached = (await this.settledConnections()).find((c) => c.attachedHere);
      if (!attached) throw new InvalidInputError("volume", `volume ${this.name} is not attached on this host`, { hint: `\`kindling disconnect ${this.name}\` ends its connections` });
      await attached.end();
      await this.connectionsChanged();
    }, { freeing: true });
  }

  /**
   * How this host reaches the volume's storage (a file path, an image), recording nothing.
   * None when the storage is gone, or is something kindling never attaches (a link in a pool).
   */
  private async localInfo(): Promise<ConnectionInfo | undefined> {
    return this.backend.driver.initializeConnection(this.toDriver(), this.backend.driver.attachProtocol as string, localConnector(), { attachMode: "ro" })
      .catch((err) => (err instanceof NotFoundError || err instanceof UnsafeFileError ? undefined : Promise.reject(err)));
  }

  /** Devices on this host backed by the volume that no connection record keeps (`keep`). */
  private async releaseDevices(keep: string[]): Promise<void> {
    const info = await this.localInfo();
    if (info) await releaseLeftovers(info, undefined, keep);
  }

  /** What the backend really holds for this volume (for refresh and drift checks). */
  async inspect(): Promise<Inspection> {
    return this.backend.driver.inspect(this.toDriver());
  }

  /**
   * Byte-level access through the driver. Not while the volume is being made or deleted: its
   * data is not whole, and a copy still being made would overwrite what was written.
   */
  async open(opts: { readOnly?: boolean } = {}): Promise<BlockDevice> {
    if (this.status === "creating" || this.status === "deleting" || this.status === "error_deleting" || this.status === "deleted") {
      throw new InvalidInputError("volume", `volume ${this.name} is ${this.status}; it cannot be opened`);
    }
    return this.backend.driver.open({ kind: "volume", volume: this.toDriver() }, { readOnly: opts.readOnly ?? false });
  }

  /**
   * Who holds the volume's writer lock: the NBD daemon for a read-write export, a download, or
   * someone by hand (`lock()`). A holder that died is returned with `live: false` (anyone may
   * take its lock over). Undefined when nobody holds it.
   */
  async writer(): Promise<WriterHolder | undefined> {
    return (await readWriterLock(this.backend.persistence, this.id))?.holder;
  }

  /**
   * Takes the volume's writer lock by hand, as swiftnbd-ctl's lock: no heartbeat and no expiry,
   * until `unlock()`. Meanwhile the NBD daemon does not export the volume read-write (read-only
   * exports and snapshots still work), downloads and deletes are refused, and so is a second
   * lock. Drivers whose storage enforces one writer take their own lock too, after the records'
   * (and give it back first), so a failure leaves nothing half taken.
   */
  async lock(): Promise<WriterHolder> {
    return this.leased("lock", async () => {
      const who = handHolder();
      const taken = await lockByHand(this.backend.persistence, this.id, who);
      if (!taken.ok) {
        if (taken.holder) throw heldBy(this.name, taken.holder, "locked");
        throw new ConflictError(`volume ${this.name}'s writer lock kept changing while it was being taken`, { hint: "try again" });
      }
      if (this.backend.driver.lockVolume) {
        try {
          await this.backend.driver.lockVolume(this.toDriver(), `${who.user}@${who.host}`);
        } catch (err) {
          await releaseWriterLock(this.backend.persistence, this.id, taken.value).catch((e) =>
            logger().warn({ volume: this.id, err: errorMessage(e) }, "could not give back the writer lock after the driver refused its own; `kindling volume unlock` releases it"));
          throw err;
        }
      }
      return (await readWriterLock(this.backend.persistence, this.id))?.holder as WriterHolder;
    });
  }

  /**
   * Releases the writer lock. A lock held by hand (by anyone) or by a holder that died is
   * released as it is; one held by a live process (the NBD daemon's export, a download) only
   * with `force`, which also makes the driver release whoever holds its own lock (a writer that
   * died on another host). Says what it released; `locked: false` when nothing was held.
   */
  async unlock(opts: { force?: boolean } = {}): Promise<{ locked: boolean; holder?: WriterHolder }> {
    const force = opts.force ?? false;
    return this.leased("unlock", async () => {
      const current = await readWriterLock(this.backend.persistence, this.id);
      const holder = current?.holder;
      if (holder?.kind === "process" && holder.live && !force) {
        throw new InUseError(`volume ${this.name}'s writer lock is held by ${holder.description}, which is running`, {
          hint: holder.purpose === "download"
            ? "it is released when the download ends"
            : `\`kindling disconnect ${this.name}\` ends the export and its lock; --force releases the lock anyway (a server that died on another host)`,
        });
      }
      // The driver's lock first: the reverse of `lock()`.
      if (this.backend.driver.unlockVolume && (holder?.kind === "hand" || force)) await this.backend.driver.unlockVolume(this.toDriver(), { force });
      if (!current) return { locked: false };
      if (!(await releaseWriterLock(this.backend.persistence, this.id, current.value))) {
        throw new ConflictError(`volume ${this.name}'s writer lock changed while it was being released`, { hint: "look again with `kindling volume show` and retry" });
      }
      return { locked: true, holder };
    }, { ifGone: () => ({ locked: false }) });
  }

  /**
   * Writes the volume's data to `file` as a sparse raw image (see download.ts), through the
   * driver's `open()`, so every backend can. The volume must have no writer: the download holds
   * its writer lock while it reads (as swiftnbd-ctl's download locked the container), so it is
   * refused while the NBD daemon exports it read-write or someone locked it by hand, and no
   * read-write export starts meanwhile. A writer outside those locks (a device attached
   * read-write) refuses it too. A snapshot's download (`Snapshot.download`) needs none of this.
   */
  async download(file: string, opts: DownloadOptions = {}): Promise<DownloadResult> {
    await checkDownloadTarget(file, opts.force);
    await this.refresh();
    if (this.gone) throw this.notFound();
    this.requireUsable("downloaded");
    const persistence = this.backend.persistence;
    const locks = new WriterLocks(DEFAULT_STALE_MS, thisProcess(), "download");
    const taken = await locks.acquire(persistence, this.id);
    if (!taken.ok) {
      if (taken.writer) throw heldBy(this.name, taken.writer, "downloaded");
      throw new InUseError(`volume ${this.name}'s writer lock is held by ${taken.holder}; it cannot be downloaded`, { hint: "try again" });
    }
    // Renewed well inside its staleness, so nobody takes it over while the copy runs.
    let lost: KindlingError | undefined;
    let renewedAt = Date.now();
    // One renewal at a time, and none left running when the lock is given back (it would take
    // the lock again).
    let renewing = Promise.resolve();
    const heartbeat = setInterval(() => {
      renewing = renewing.then(() => locks.acquire(persistence, this.id)).then((r) => {
        if (r.ok) renewedAt = Date.now();
        else lost = r.writer ? heldBy(this.name, r.writer, "downloaded") : new InUseError(`volume ${this.name}'s writer lock was taken by ${r.holder} during the download`);
      }, (err) => {
        if (Date.now() - renewedAt > DEFAULT_STALE_MS / 2) lost = new InUseError(`volume ${this.name}'s writer lock could not be renewed during the download: ${errorMessage(err)}`);
      });
    }, DEFAULT_STALE_MS / 6);
    heartbeat.unref();
    try {
      const writers = (await this.connections()).filter((c) => c.attachMode === "rw" && c.protocol !== "nbd");
      if (writers.length) {
        const where = writers.map((c) => c.devicePath ?? c.protocol).join(", ");
        throw new InUseError(`volume ${this.name} is connected read-write (${where}); it cannot be downloaded while it may change`, {
          hint: `snapshot it first (\`kindling snapshot create ${this.name} NAME\`) and download the snapshot (\`kindling volume download ${this.name} FILE --snapshot NAME\`)`,
        });
      }
      const device = await this.open({ readOnly: true });
      try {
        return await writeImage(device, file, {
          ...opts,
          ...this.backend.progressFor("download", this.id, opts.onProgress),
          checkpoint: () => {
            if (lost) throw lost;
          },
        });
      } finally {
        await device.close();
      }
    } finally {
      clearInterval(heartbeat);
      await renewing;
      await locks.release(persistence, this.id).catch((err) => logger().warn({ volume: this.id, err: errorMessage(err) }, "could not give back the download's writer lock; it expires"));
    }
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
