import { mkdirSync, readFileSync } from "node:fs";
import type {
  BackendStats, BlockDevice, DriverSnapshot, DriverVolume, Inspection, ModelUpdate, OpenTarget, VolumeDriver,
} from "../contract";
import type { ConnectionInfo, Specs } from "../contract";
import { validateQosSpecs } from "../qos";
import { BackendError, InUseError, InvalidInputError, NotFoundError, KindlingError } from "../../util/errors";
import { GiB, bytesToGiB } from "../../util/sizes";
import { logger } from "../../util/log";
import { objectExtraSpecsSchema, type ObjectConfig } from "./config";
import { BlockCache } from "./cache";
import { ObjectBlockDevice } from "./blockdevice";
import { checkpointKey, checkedId, logKey, snapshotKey, volumePrefix } from "./layout";
import { StoreLease } from "./lease";
import { appendBeside } from "./handoff";
import { dropVanishedClones, loadState } from "./log";
import { BlockReader } from "./reader";
import { encodeRecord, newHeader, type ParentRef, type RecordHeader, type RecordKind } from "./record";
import { S3Store } from "./s3";
import { SwiftStore } from "./swift";
import { PreconditionFailed, type ObjectStore } from "./store";
import type { VolumeState } from "./state";
import { VolumeWriter, type WriterSettings } from "./writer";
import { probeConditionalCreate, type Fencing } from "./probe";

export const OBJECT_DRIVER_VERSION = "1.0.0";

/** `snap/<id>`: the state the snapshot holds, and a checkpoint before it to rebuild it from until it has its own. */
interface SnapshotObject {
  seq: number;
  base?: number;
  sizeBytes: number;
  blockSize?: number;
}

/** The checkpoint a state was built from, for a pin on it to be rebuilt from; none: from the log's start. */
const baseOf = (state: VolumeState) => (state.checkpointSeq >= 0 ? state.checkpointSeq : undefined);

const isNotFound = (err: unknown) => err instanceof KindlingError && err.code === "NOT_FOUND";

/** The largest volume: offsets stay exact in a JavaScript number far beyond this. */
const MAX_SIZE_GIB = 1024 * 1024;

/**
 * Volumes as logs of immutable objects in one S3 bucket or Swift container (layout.ts): nothing
 * is ever overwritten, so a crash can never tear a volume, snapshots and clones are one small
 * record whatever the size, and the store itself (a create-only PUT per commit) lets one writer
 * at a time commit. No service runs anywhere: every process that opens the backend reads the
 * same objects.
 */
export class ObjectDriver implements VolumeDriver {
  readonly driverName = "object";
  readonly protocols = [] as const;
  private storeInstance?: ObjectStore;
  private fencing?: Fencing;
  private readonly cache: BlockCache;
  /** One writer per volume in this process, shared by every writable open of it. */
  private readonly writers = new Map<string, Promise<VolumeWriter>>();

  constructor(
    readonly backendName: string,
    private readonly config: ObjectConfig,
  ) {
    this.cache = new BlockCache(config.cacheSizeMiB * 1024 * 1024);
  }

  get store(): ObjectStore {
    if (!this.storeInstance) throw new Error(`backend ${this.backendName} is not set up; await backend.ready() first`);
    return this.storeInstance;
  }

  private secret(value: string | undefined, file: string | undefined, field: string): string {
    if (value !== undefined) return value;
    try {
      return readFileSync(file as string, "utf8").trim();
    } catch (err) {
      throw new InvalidInputError(field, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }

  private makeStore(): ObjectStore {
    const c = this.config;
    const timeoutMs = c.timeoutSeconds * 1000;
    if (c.api === "s3") {
      return new S3Store({
        endpoint: c.endpoint as string, bucket: c.bucket as string, region: c.region, accessKey: c.accessKey as string,
        secretKey: this.secret(c.secretKey, c.secretKeyFile, "secretKeyFile"), timeoutMs,
      });
    }
    return new SwiftStore({
      authUrl: c.authUrl, user: c.user, key: c.authUrl ? this.secret(c.key, c.keyFile, "keyFile") : undefined,
      storageUrl: c.storageUrl, token: c.token, container: c.container as string, timeoutMs,
    });
  }

  /** Checks the credentials and the bucket or container, and whether the store's creates are exclusive. */
  async setup(): Promise<void> {
    try {
      mkdirSync(this.config.cacheDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new InvalidInputError("cacheDir", `cannot make ${this.config.cacheDir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const store = this.makeStore();
    await store.check();
    this.storeInstance = store;
  }

  /** Whether this store refuses a second create of one key: the probe runs once, when a writer first needs it. */
  private async fencingOf(): Promise<Fencing> {
    this.fencing ??= await probeConditionalCreate(this.store);
    return this.fencing;
  }

  private get pool(): string {
    return this.config.api === "s3" ? (this.config.bucket as string) : (this.config.container as string);
  }

  poolNames(): string[] {
    return [this.pool];
  }

  defaultPool(): string {
    return this.pool;
  }

  private checkPool(pool: string): void {
    if (pool !== this.pool) throw new InvalidInputError("pool", `backend ${this.backendName} has no pool ${JSON.stringify(pool)}; pools: ${this.pool}`);
  }

  private get settings(): WriterSettings {
    const c = this.config;
    return {
      durability: c.durability,
      segmentBytes: c.segmentSizeMiB * 1024 * 1024,
      dirtyLimitBytes: c.dirtyLimitMiB * 1024 * 1024,
      dirtyAgeMs: c.dirtyAgeSeconds * 1000,
      leaseMs: c.leaseSeconds * 1000,
      checkpointEvery: c.checkpointEvery,
      gcHorizonMs: c.gcHorizonSeconds * 1000,
      cacheDir: c.cacheDir,
    };
  }

  // ---- stats

  async stats(): Promise<BackendStats> {
    let volumes = 0;
    let provisioned = 0;
    let stored = 0;
    const ids = new Set<string>();
    for await (const o of this.store.list("kindling/v1/vol/")) {
      stored += o.size;
      const id = /^kindling\/v1\/vol\/([^/]+)\/log\/0{16}$/.exec(o.key)?.[1];
      if (id) ids.add(id);
    }
    for (const id of ids) {
      const state = await loadState(this.store, id).catch(() => undefined);
      if (!state) continue;
      volumes++;
      provisioned += state.sizeBytes;
    }
    const gb = (n: number) => Math.round((n / GiB) * 100) / 100;
    const pool = {
      pool_name: this.pool,
      total_capacity_gb: "infinite" as const,
      free_capacity_gb: "infinite" as const,
      reserved_percentage: this.config.reservedPercentage,
      thin_provisioning_support: true,
      thick_provisioning_support: false,
      max_over_subscription_ratio: this.config.maxOverSubscriptionRatio,
      provisioned_capacity_gb: gb(provisioned),
      allocated_capacity_gb: gb(stored),
      total_volumes: volumes,
      QoS_support: false,
      online_extend_support: true,
      multiattach: false,
      location_info: this.store.where,
    };
    return {
      volume_backend_name: this.backendName,
      vendor_name: "kindling",
      driver_version: OBJECT_DRIVER_VERSION,
      storage_protocol: "nbd",
      total_capacity_gb: "infinite",
      free_capacity_gb: "infinite",
      reserved_percentage: this.config.reservedPercentage,
      thin_provisioning_support: true,
      max_over_subscription_ratio: this.config.maxOverSubscriptionRatio,
      provisioned_capacity_gb: gb(provisioned),
      total_volumes: volumes,
      pools: [pool],
    };
  }

  validateExtraSpecs(specs: Specs): void {
    const parsed = objectExtraSpecsSchema.safeParse(specs);
    if (!parsed.success) {
      const key = Object.keys(specs)[0];
      throw new InvalidInputError(`extraSpecs.${key}`, "the object driver takes no extra specs");
    }
  }

  validateQosSpecs(specs: Specs): void {
    validateQosSpecs(specs);
  }

  async maxSizeGiB(pool: string): Promise<number> {
    this.checkPool(pool);
    return MAX_SIZE_GIB;
  }

  // ---- volumes

  private location(volumeId: string): string {
    return `${this.store.where}/${volumePrefix(volumeId)}`;
  }

  /**
   * The genesis record: the volume exists once it is there. A re-run after a crash finds its
   * own, and returns the parent it names (a clone re-run pins what its genesis reads, not what
   * the source is now).
   */
  private async genesis(volume: DriverVolume, fields: { blockSize: number; parent?: ParentRef }): Promise<ParentRef | undefined> {
    const header = newHeader("genesis", checkedId(volume.id), 0, { sizeBytes: volume.sizeGiB * GiB, blockSize: fields.blockSize, parent: fields.parent });
    try {
      await this.store.put(logKey(volume.id, 0), encodeRecord(header), { ifNoneMatch: true });
    } catch (err) {
      if (!(err instanceof PreconditionFailed)) throw err;
      const there = await loadState(this.store, volume.id, { upTo: 0 });
      if (there.blockSize !== fields.blockSize || there.parent?.volumeId !== fields.parent?.volumeId) {
        throw new BackendError(`volume ${volume.id} already has objects at ${this.location(volume.id)} that kindling did not make for this volume`, { hint: "remove them, or use another bucket" });
      }
      return there.parent;
    }
    return fields.parent;
  }

  async createVolume(volume: DriverVolume): Promise<ModelUpdate> {
    this.checkPool(volume.pool);
    await this.genesis(volume, { blockSize: this.config.blockSizeKiB * 1024 });
    return { location: this.location(volume.id) };
  }

  /** The state at the log's end, undefined when the volume has no log; `meta`: without the map (metaOf). */
  private async stateOf(volumeId: string, opts: { meta?: boolean } = {}): Promise<VolumeState | undefined> {
    return loadState(this.store, volumeId, opts).catch((err) => (isNotFound(err) ? undefined : Promise.reject(err)));
  }

  /**
   * Every object of the volume goes, its first record last (until then `inspect` still sees
   * the volume, so an interrupted delete is finished by the next one). Refused while a writer
   * holds it; clones that read through to it are flattened first, or the delete is refused.
   */
  async deleteVolume(volume: DriverVolume): Promise<void> {
    const id = checkedId(volume.id);
    const state = await this.stateOf(id, { meta: true });
    if (state) {
      const holder = await new StoreLease(this.store, id, this.settings.leaseMs).holder();
      if (holder && !this.writers.has(id)) throw new InUseError(`volume ${id} is held by ${holder}`, { hint: "close it there first" });
      await dropVanishedClones(this.store, state);
      for (const child of state.pins.clones.keys()) {
        if (this.config.dependentClones === "refuse") {
          throw new InUseError(`volume ${id} has clones that read through to it (${[...state.pins.clones.keys()].join(", ")})`, { hint: "delete or flatten them first, or set dependentClones: flatten" });
        }
        await this.flatten(child);
      }
      if (state.parent) await this.unpin(state.parent.volumeId, { child: id });
    }
    const keys: string[] = [];
    for await (const o of this.store.list(volumePrefix(id))) keys.push(o.key);
    const genesis = logKey(id, 0);
    const rest = keys.filter((k) => k !== genesis);
    for (let i = 0; i < rest.length; i += 16) await Promise.all(rest.slice(i, i + 16).map((k) => this.store.delete(k)));
    await this.store.delete(genesis);
  }

  /** Ends a clone's hold on its parent (the parent may be gone already). */
  private async unpin(parentId: string, what: { child: string }): Promise<void> {
    const parent = await this.stateOf(parentId, { meta: true });
    if (parent?.pins.clones.has(what.child)) await this.appendBeside(parent, "unclone", { child: what.child });
  }

  /** Copies what a clone reads from its parent into the clone; then it stands alone. */
  private async flatten(childId: string): Promise<void> {
    const child = await this.stateOf(childId, { meta: true });
    if (!child?.parent) {
      return;
    }
    const parentId = child.parent.volumeId;
    logger().info({ clone: childId, parent: parentId }, "flattening a clone before its parent goes");
    const writer = await this.writerFor(childId);
    try {
      await writer.flatten();
    } finally {
      await writer.close();
    }
    await this.unpin(parentId, { child: childId });
  }

  /** A record of ours in a volume another process may be writing (handoff.ts). */
  private appendBeside(state: VolumeState, kind: RecordKind, fields: Partial<RecordHeader>): Promise<number> {
    return appendBeside(this.store, state, kind, fields, new StoreLease(this.store, state.volumeId, this.settings.leaseMs));
  }

  /** Size, pins, parent and tail without the map: constant time whatever the volume holds. */
  private async metaOf(volumeId: string): Promise<VolumeState> {
    return loadState(this.store, checkedId(volumeId), { meta: true });
  }

  /** One record; nothing is allocated. A writer of the volume sees it at its next commit or poll. */
  async extendVolume(volume: DriverVolume, newSizeGiB: number): Promise<void> {
    const state = await this.metaOf(volume.id);
    const newBytes = newSizeGiB * GiB;
    if (state.sizeBytes >= newBytes) return; // done already (a re-run)
    await this.appendBeside(state, "resize", { sizeBytes: newBytes });
  }

  /**
   * A snapshot is the volume's log at one sequence number: one small record pins it (what a
   * writer has not committed yet is not in it: it holds what was flushed) and `snap/<id>` names
   * it. No checkpoint is written here (that would take time in proportion to the volume): the
   * record names the newest checkpoint before it, from which the state at the pin is the records
   * after, and the volume's writer makes the pin's own checkpoint before its sweep could take
   * any of them.
   */
  async createSnapshot(snapshot: DriverSnapshot): Promise<ModelUpdate> {
    const id = checkedId(snapshot.id);
    const state = await this.metaOf(snapshot.volumeId);
    const base = baseOf(state);
    const seq = await this.appendBeside(state, "snapshot", { snapshot: id, base });
    const named: SnapshotObject = { seq, base, sizeBytes: state.sizeBytes, blockSize: state.blockSize };
    await this.store.put(snapshotKey(snapshot.volumeId, id), Buffer.from(JSON.stringify(named)));
    return { location: `${this.location(snapshot.volumeId)}@${seq}` };
  }

  private async snapshotSeq(snapshot: DriverSnapshot): Promise<SnapshotObject | undefined> {
    const body = await this.store.get(snapshotKey(snapshot.volumeId, checkedId(snapshot.id)));
    return body ? (JSON.parse(body.toString("utf8")) as SnapshotObject) : undefined;
  }

  async deleteSnapshot(snapshot: DriverSnapshot): Promise<void> {
    const id = checkedId(snapshot.id);
    const state = await this.stateOf(checkedId(snapshot.volumeId), { meta: true });
    if (!state) return;
    const seq = state.pins.snapshots.get(id);
    if (seq !== undefined) await this.appendBeside(state, "snapdel", { snapshot: id });
    await this.store.delete(snapshotKey(snapshot.volumeId, id));
    // Clones made from the snapshot pin its state themselves and open from its checkpoint.
    if (seq !== undefined && ![...state.pins.clones.values(), ...state.pins.snapshots.values()].includes(seq)) {
      await this.store.delete(checkpointKey(snapshot.volumeId, seq));
    }
  }

  /**
   * A clone reads through to its parent as it was at `reads.seq` until written: its genesis names
   * that state (and a checkpoint before it to rebuild it from), then a pin in the parent's log
   * keeps it. Constant time: nothing of the parent's map is read or written.
   */
  private async makeClone(volume: DriverVolume, parent: VolumeState, reads: ParentRef, blockSize: number): Promise<ModelUpdate> {
    this.checkPool(volume.pool);
    const pinned = (await this.genesis(volume, { blockSize, parent: reads })) as ParentRef;
    if (parent.pins.clones.get(volume.id) !== pinned.seq) await this.appendBeside(parent, "clone", { child: volume.id, at: pinned.seq, base: pinned.base });
    return { location: this.location(volume.id) };
  }

  async cloneVolume(volume: DriverVolume, source: DriverVolume): Promise<ModelUpdate> {
    const state = await this.metaOf(source.id);
    return this.makeClone(volume, state, { volumeId: source.id, seq: state.seq, base: baseOf(state) }, state.blockSize);
  }

  async createVolumeFromSnapshot(volume: DriverVolume, snapshot: DriverSnapshot): Promise<ModelUpdate> {
    const snap = await this.snapshotSeq(snapshot);
    if (!snap) throw new NotFoundError("snapshot", snapshot.id, { hint: `its objects are not at ${this.location(snapshot.volumeId)}` });
    const parent = await this.metaOf(snapshot.volumeId);
    return this.makeClone(volume, parent, { volumeId: snapshot.volumeId, seq: snap.seq, base: snap.base }, snap.blockSize ?? parent.blockSize);
  }

  // ---- the truth for refresh

  async inspect(volume: DriverVolume): Promise<Inspection> {
    const state = await this.stateOf(checkedId(volume.id));
    if (!state) return { exists: false };
    const writer = await new StoreLease(this.store, volume.id, this.settings.leaseMs).holder();
    return {
      exists: true, sizeBytes: state.sizeBytes, sizeGiB: bytesToGiB(state.sizeBytes), allocatedBytes: state.allocatedBytes, location: this.location(volume.id),
      details: {
        durability: this.config.durability,
        // S3's create-only PUT is atomic; Swift checks it replica by replica, so two creates at
        // the same moment can both succeed there (measured on the all-in-one).
        fencing: this.config.api === "s3" ? "exact: create-only commits (If-None-Match)" : "best effort: Swift's If-None-Match is not atomic under concurrent creates",
        blockSizeBytes: state.blockSize,
        logRecords: state.seq + 1,
        checkpoint: state.checkpointSeq,
        snapshots: state.pins.snapshots.size,
        clones: state.pins.clones.size,
        parent: state.parent ? `${state.parent.volumeId}@${state.parent.seq}` : "none",
        writer: writer ?? "none",
      },
    };
  }

  async inspectSnapshot(snapshot: DriverSnapshot): Promise<Inspection> {
    const snap = await this.snapshotSeq(snapshot);
    if (!snap) return { exists: false };
    // Its state: its own checkpoint, or (until the writer makes that) its base and its record.
    const own = await this.store.head(checkpointKey(snapshot.volumeId, snap.seq));
    if (!own) {
      const base = snap.base !== undefined && snap.base >= 0 ? await this.store.head(checkpointKey(snapshot.volumeId, snap.base)) : await this.store.head(logKey(snapshot.volumeId, 0));
      if (!base || !(await this.store.head(logKey(snapshot.volumeId, snap.seq)))) return { exists: false };
    }
    return { exists: true, sizeBytes: snap.sizeBytes, sizeGiB: bytesToGiB(snap.sizeBytes), location: `${this.location(snapshot.volumeId)}@${snap.seq}` };
  }

  // ---- connections: kindling's NBD server is the way in

  validateConnector(protocol: string): void {
    throw new InvalidInputError("protocol", `the object driver has no protocol of its own; kindling serves its volumes over nbd, not ${JSON.stringify(protocol)}`);
  }

  async initializeConnection(_volume: DriverVolume, protocol: string): Promise<ConnectionInfo> {
    this.validateConnector(protocol);
    throw new Error("unreachable");
  }

  async terminateConnection(): Promise<void> {}

  // ---- the data path

  private async parentReader(state: VolumeState): Promise<BlockReader | undefined> {
    if (!state.parent) return undefined;
    const ps = await loadState(this.store, state.parent.volumeId, { upTo: state.parent.seq, base: state.parent.base }).catch((err) => {
      if (isNotFound(err)) throw new BackendError(`clone ${state.volumeId} reads through to volume ${state.parent?.volumeId}, whose objects are gone`, { hint: "the clone's data that was never written to it is lost" });
      throw err;
    });
    return new BlockReader(this.store, ps, this.cache, await this.parentReader(ps));
  }

  private async writerFor(volumeId: string): Promise<VolumeWriter> {
    for (let existing = this.writers.get(volumeId); existing; existing = this.writers.get(volumeId)) {
      const w = await existing;
      if (w.share()) return w;
      await w.closed(); // the last close here is draining: a new writer takes over after it
    }
    const opening: Promise<VolumeWriter> = (async () => {
      if ((await this.fencingOf()) === "none") {
        throw new BackendError(`${this.store.where} does not refuse a second create of one object (If-None-Match: *), so kindling cannot keep two writers apart there`, {
          hint: "reach this store through an API that honours it (radosgw: use api s3), or open the volume read-only",
        });
      }
      return VolumeWriter.open(this.store, () => loadState(this.store, volumeId), (s) => this.parentReader(s), this.cache, this.settings, volumeId, () => {
        if (this.writers.get(volumeId) === opening) this.writers.delete(volumeId);
      });
    })();
    // Set before anything is awaited: a second open here shares this one instead of racing it.
    this.writers.set(volumeId, opening);
    try {
      return await opening;
    } catch (err) {
      if (this.writers.get(volumeId) === opening) this.writers.delete(volumeId);
      throw err;
    }
  }

  async open(target: OpenTarget, opts: { readOnly: boolean }): Promise<BlockDevice> {
    if (target.kind === "snapshot") {
      const snap = await this.snapshotSeq(target.snapshot);
      if (!snap) throw new NotFoundError("snapshot", target.snapshot.id, { hint: `its objects are not at ${this.location(target.snapshot.volumeId)}` });
      const state = await loadState(this.store, target.snapshot.volumeId, { upTo: snap.seq, base: snap.base });
      const reader = new BlockReader(this.store, state, this.cache, await this.parentReader(state));
      return new ObjectBlockDevice(target.snapshot.volumeSizeGiB * GiB, state.blockSize, { reader }, async () => undefined);
    }
    const volume = target.volume;
    const size = volume.sizeGiB * GiB;
    if (opts.readOnly) {
      // What is committed now; a writer elsewhere may commit more after.
      const state = await loadState(this.store, checkedId(volume.id));
      const reader = new BlockReader(this.store, state, this.cache, await this.parentReader(state));
      return new ObjectBlockDevice(size, state.blockSize, { reader }, async () => undefined);
    }
    const writer = await this.writerFor(checkedId(volume.id));
    return new ObjectBlockDevice(size, writer.state.blockSize, { writer }, () => writer.close());
  }

  async lockVolume(volume: DriverVolume, holder: string): Promise<void> {
    await new StoreLease(this.store, checkedId(volume.id), this.settings.leaseMs).acquire({ manual: holder });
  }

  async unlockVolume(volume: DriverVolume, opts: { force: boolean }): Promise<void> {
    const released = await new StoreLease(this.store, checkedId(volume.id), this.settings.leaseMs).unlock(opts.force);
    if (released) logger().warn({ volume: volume.id, released }, "object volume lock released");
  }
}
