import { EventEmitter } from "node:events";
import type { BackendStats, DriverModule, DriverVolume, Progress, VolumeDriver } from "../drivers/contract";
import { provenanceOf } from "../images/provenance";
import type { PreparedImage } from "../images/to-volume";
import type { ImageSource } from "../images/sources/source";
import type { CreateFromImageCallOptions, CreateVolumeWithImageOptions } from "./image-volume";
import { GiB } from "../util/sizes";
import type { z } from "zod";
import { driverModule, driverNames } from "../drivers/registry";
import { openPersistence } from "../persistence";
import type { Persistence } from "../persistence/contract";
import { persistenceConfigSchema, type PersistenceConfig } from "../persistence/config";
import type { AnyRecord, ImageProvenance, VolumeRecord } from "../persistence/records";
import { InterruptedError, InvalidInputError, NotFoundError } from "../util/errors";
import { logger } from "../util/log";
import { isNoSpace } from "../persistence/errors";
import { DEFAULT_LEASE_SETTINGS, type LeaseSettings } from "./lease";
import { setupOnFirstUse } from "./driver-setup";
import { isId, nameSchema, normalizeId } from "../util/names";
import { KeyedMutex } from "../util/locks";
import { parseInput } from "../util/validate";
import { newId, now } from "../util/ids";
import { connectorSchema, createVolumeSchema, type CreateVolumeFromImageOptions, type CreateVolumeOptions } from "./schemas";
import { expandPersistenceHome, resolvePaths } from "./config-paths";
import { Volume } from "./volume";
import { Snapshot } from "./snapshot";
import { Connection } from "./connection";
import { isServedProtocol, validateServedConnector } from "../attach/protocols";
import type { ImageCacheSettings } from "../images/cache/settings";
import { ImageCache } from "./image-cache";

// The image pipeline is loaded when a volume is first made from an image: a process that only
// serves or manages volumes (the NBD daemon above all) need not hold its code in memory.
const toVolume = () => require("../images/to-volume") as typeof import("../images/to-volume");
const imageVolume = () => require("./image-volume") as typeof import("./image-volume");
const imageClone = () => require("./image-clone") as typeof import("./image-clone");

/** A backend as written in a configuration file entry, plus its name. */
export interface BackendConfig {
  name: string;
  driver: string;
  /** Where this backend's records live; by default beside its data (the driver decides). */
  persistence?: PersistenceConfig;
  [setting: string]: unknown;
}

export interface BackendOptions {
  /** A persistence shared with other backends; overrides the config's `persistence`. */
  persistence?: Persistence;
  /** Relative paths in the config resolve against this directory (the config file's). */
  baseDir?: string;
  /** Prefix for field names in errors, e.g. "backends.local". */
  fieldPrefix?: string;
  /** How long leases last and how long an operation waits for another one (tests shorten them). */
  leases?: Partial<LeaseSettings>;
  /** The image cache's limits (the configuration's `imageCache`); without them volumes from images are not cached. */
  imageCache?: ImageCacheSettings;
}

export interface ProgressEvent extends Progress {
  operation: string;
  objectId: string;
}

export interface BackendDump {
  class: "Backend";
  name: string;
  driver: string;
  records: AnyRecord[];
}

/**
 * One storage backend: a driver with its settings and the records of what it holds.
 * Several backends, of the same or different drivers, live side by side in one process.
 * The constructor validates synchronously; the driver and persistence start on first use.
 *
 * Emits "progress" ({ operation, objectId, done, total }) during long copies.
 */
export class Backend extends EventEmitter {
  readonly name: string;
  readonly driverName: string;
  readonly driver: VolumeDriver;
  /** Settings as validated, secrets included: never log this. */
  readonly settings: Readonly<Record<string, unknown>>;
  /**
   * Queues operations on one object within this process, before they take its lease; the lease
   * (in the records) is what keeps other processes out.
   */
  readonly locks = new KeyedMutex();
  readonly leaseSettings: LeaseSettings;
  /** Cached images of this backend, per pool (library/image-cache.ts). */
  readonly imageCache: ImageCache;
  /** The store's reserve was spent on a delete and should be put back. */
  private reserveSpent = false;
  private readonly module: DriverModule<unknown>;
  private readonly persistenceConfig?: PersistenceConfig;
  private persistenceStore?: Persistence;
  private readonly ownsPersistence: boolean;
  private readonly baseDir?: string;
  private starting?: Promise<void>;
  private statsCache?: BackendStats;

  constructor(config: BackendConfig, opts: BackendOptions = {}) {
    super();
    const prefix = opts.fieldPrefix ?? "backend";
    if (typeof config !== "object" || config === null) throw new InvalidInputError(prefix, "must be an object");
    const { name, persistence, ...driverConfig } = config;
    this.name = parseInput(nameSchema, name, `${prefix}.name`);
    const module = typeof driverConfig.driver === "string" ? driverModule(driverConfig.driver) : undefined;
    if (!module) {
      throw new InvalidInputError(`${prefix}.driver`, `unknown driver ${JSON.stringify(driverConfig.driver)}; known: ${driverNames().join(", ")}`);
    }
    this.module = module;
    this.driverName = module.driverName;
    const resolved = resolvePaths(driverConfig, module.pathFields, opts.baseDir, prefix);
    this.settings = parseInput(module.configSchema, resolved, prefix) as Record<string, unknown>;
    // Setup (which may reach a storage cluster) runs when the driver is first needed, so
    // records-only work (listing, showing records) never waits on the storage.
    this.driver = setupOnFirstUse(module.create(this.name, this.settings));
    this.leaseSettings = { ...DEFAULT_LEASE_SETTINGS, ...opts.leases };
    if (persistence !== undefined && !opts.persistence) {
      // A program's backend (a Pulumi resource's) may name its records with `~` too.
      this.persistenceConfig = parseInput(persistenceConfigSchema, expandPersistenceHome(persistence, `${prefix}.persistence`), `${prefix}.persistence`);
    }
    this.persistenceStore = opts.persistence;
    this.ownsPersistence = !opts.persistence;
    this.baseDir = opts.baseDir;
    this.imageCache = new ImageCache(this, opts.imageCache);
  }

  /** Builds a backend and waits until its driver and persistence are up. */
  static async open(config: BackendConfig, opts: BackendOptions = {}): Promise<Backend> {
    const backend = new Backend(config, opts);
    // The driver first: a configuration the storage refuses leaves no records store behind.
    await backend.driver.setup();
    await backend.ready();
    return backend;
  }

  /** Opens persistence, once; the driver starts on first use (or `driver.setup()`). */
  ready(): Promise<void> {
    this.starting ??= (async () => {
      this.persistenceStore ??= await openPersistence(
        this.persistenceConfig ?? { storage: "sqlite", path: this.module.defaultPersistencePath(this.settings, this.name) },
        { baseDir: this.baseDir },
      );
    })();
    return this.starting;
  }

  /**
   * One record write (a compare-and-set). A write of an operation that frees space, failing
   * because the store's filesystem is full, spends the store's reserve and is tried once more:
   * a user must always be able to delete to make room.
   */
  async writeRecord(attempt: () => Promise<boolean>, opts: { freeing?: boolean } = {}): Promise<boolean> {
    try {
      return await attempt();
    } catch (err) {
      if (!opts.freeing || !isNoSpace(err) || !(await this.persistence.releaseReserve?.())) throw err;
      this.reserveSpent = true;
      logger().warn({ store: this.persistence.location }, "the records store is full; spending its reserve to record a delete");
      return attempt();
    }
  }

  /** Puts the store's reserve back after a delete spent it (where space now allows). */
  async restoreReserve(): Promise<void> {
    if (!this.reserveSpent) return;
    this.reserveSpent = false;
    await this.persistence.restoreReserve?.();
  }

  get persistence(): Persistence {
    if (!this.persistenceStore) throw new Error(`backend ${this.name} is not ready; await backend.ready() first`);
    return this.persistenceStore;
  }

  /** Cinder-style capacity and capability stats, cached until asked to refresh. */
  async stats(refresh = false): Promise<BackendStats> {
    if (refresh || !this.statsCache) this.statsCache = await this.driver.stats();
    return structuredClone(this.statsCache);
  }

  poolNames(): string[] {
    return this.driver.poolNames();
  }

  /**
   * Validates every option, then creates the volume. Nothing is created on bad input. With
   * `image` (a reference, `file:PATH`, an http(s) URL or `SERVICE:NAME_OR_ID` of
   * `opts.imageServices`, or an ImageSource), the volume is made from that image: see
   * createVolumeFromImage; `imageDigests` are checked besides any the source offers.
   */
  async createVolume(options: CreateVolumeOptions | CreateVolumeWithImageOptions, opts: CreateFromImageCallOptions = {}): Promise<Volume> {
    await this.ready();
    if (typeof options === "object" && options !== null && "image" in options && options.image !== undefined) {
      const { image, imageDigests, ...rest } = options as CreateVolumeWithImageOptions;
      const source = await imageVolume().imageSourceOf(image, imageDigests, opts.imageServices);
      return this.createVolumeFromImage(source, rest, opts);
    }
    return this.makeVolume(parseInput(createVolumeSchema, options), opts);
  }

  /**
   * A new volume holding an image (images/to-volume.ts). Raw content is streamed straight into
   * it; anything else (qcow2, vmdk, vhd, vhdx, vdi, any compressed image) is staged once,
   * checked (inspector, policy, qemu-img info cross-checked) and converted into it. Every
   * digest is verified and the image refused before anything is created when it is unsafe;
   * the size defaults to what the image needs (its virtual size, the service's min_disk) and
   * may be larger, never smaller. On any failure the volume is deleted again, and the staging
   * file is always removed. Progress: "stage-image" while staging, then "create".
   */
  async createVolumeFromImage(source: ImageSource, options: CreateVolumeFromImageOptions, opts: CreateFromImageCallOptions & { imageCache?: boolean } = {}): Promise<Volume> {
    await this.ready();
    // A raw image the service keeps where the driver can clone it (Glance's rbd store in this
    // backend's cluster) is cloned, and the clone verified (library/image-clone.ts). Before the
    // cache: the service's snapshot already is what a cache entry would be, so a miss would copy
    // the image once more for nothing, and a hit would clone a copy instead of the original.
    const cloned = await imageClone().cloneImageFromLocation(this, source, options, opts);
    if (cloned) return cloned;
    // The image cache answers next when configured (`imageCache: false` skips it for one call):
    // a clone of its cached volume. It passes on images it does not take, copied below as ever.
    if (opts.imageCache !== false) {
      const cloned = await this.imageCache.createVolume(source, options, opts);
      if (cloned) return cloned;
    }
    const { allowUnverified, sizeGiB, ...rest } = options;
    // Every other field is checked before the source is read at all.
    const early = parseInput(createVolumeSchema, { ...rest, sizeGiB: sizeGiB ?? 1 });
    const pool = await this.checkPlacement(early.pool, early.sizeGiB);
    const id = early.id ?? newId();
    const staging = this.progressFor("stage-image", id, opts.onProgress);
    const tooSmall = (needed: number, what: string) => new InvalidInputError("sizeGiB", `the image needs at least ${needed} GiB (${what}), more than ${sizeGiB}`);
    try {
      const prepared = await toVolume().prepareImage(source, {
        allowUnverified,
        field: "image",
        stagingDir: opts.stagingDir,
        maxImageBytes: (await this.driver.maxSizeGiB(pool)) * GiB,
        onProgress: staging.onProgress,
        signal: opts.signal,
        // The service's min_disk is known before a byte is read: a size below it is refused then.
        described: (d) => {
          if (sizeGiB !== undefined && d.minDiskGiB !== undefined && sizeGiB < d.minDiskGiB) throw tooSmall(d.minDiskGiB, `min_disk ${d.minDiskGiB} GiB`);
        },
      });
      try {
        const minDisk = prepared.description.minDiskGiB ?? 0;
        const needed = Math.max(1, Math.ceil(prepared.virtualSize / GiB), minDisk);
        if (sizeGiB !== undefined && sizeGiB < needed) {
          const what = prepared.kind === "staged" ? `a virtual size of ${prepared.virtualSize} bytes` : `${prepared.virtualSize} bytes`;
          throw tooSmall(needed, `${what}${minDisk ? `, min_disk ${minDisk} GiB` : ""}`);
        }
        const input = parseInput(createVolumeSchema, { ...rest, id, sizeGiB: sizeGiB ?? needed });
        const fill =
          prepared.kind === "stream"
            ? async (volume: DriverVolume, onProgress: (p: Progress) => void) => {
                const device = await this.driver.open({ kind: "volume", volume }, { readOnly: false });
                try {
                  await toVolume().writeRawImage(prepared, device, { onProgress, signal: opts.signal });
                } finally {
                  await device.close();
                }
              }
            : (volume: DriverVolume, onProgress: (p: Progress) => void) => toVolume().convertStagedImage(prepared, this.driver, volume, { onProgress, signal: opts.signal });
        return await this.makeVolume(input, opts, fill, provenanceOfPrepared(prepared));
      } finally {
        prepared.close();
      }
    } catch (err) {
      // An abort shows as whatever it broke (a stream, qemu-img): say what happened instead.
      if (opts.signal?.aborted) throw new InterruptedError(`the copy of the image into volume ${rest.name ?? id} was interrupted; nothing was kept`);
      throw err;
    }
  }

  /** Records the volume as creating, has the driver make it (and `fill` write into it), and marks it available. */
  private async makeVolume(
    input: z.output<typeof createVolumeSchema>,
    opts: { onProgress?: (p: Progress) => void },
    fill?: (volume: DriverVolume, onProgress: (p: Progress) => void) => Promise<void>,
    image?: ImageProvenance,
  ): Promise<Volume> {
    const record = await this.newVolumeRecord(input, image ? { image } : {});
    const id = record.id;
    const progress = this.progressFor("create", id, opts.onProgress);
    return Volume.build(this, record, async (volume) => {
      const update = await this.driver.createVolume(volume, progress);
      if (!fill) return update;
      // Still "creating": nobody else uses it, and a failure takes the storage back with it.
      const made = { ...volume, location: update.location ?? volume.location };
      try {
        await fill(made, progress.onProgress);
      } catch (err) {
        await this.driver.deleteVolume(made).catch((cleanup: Error) => logger().warn({ volume: id, err: cleanup.message }, "could not delete a volume whose image copy failed"));
        throw err;
      }
      return update;
    });
  }

  /**
   * The record of a new volume, "creating", from checked create options: its pool placed and
   * its specs validated by the driver, `extra` (an image's provenance, a clone's source) added.
   * Every way of making a volume starts here.
   */
  async newVolumeRecord(input: z.output<typeof createVolumeSchema>, extra: Partial<Pick<VolumeRecord, "image" | "sourceVolumeId">> = {}): Promise<VolumeRecord> {
    const pool = await this.checkPlacement(input.pool, input.sizeGiB);
    const extraSpecs = input.extraSpecs ?? {};
    const qosSpecs = input.qosSpecs ?? {};
    this.driver.validateExtraSpecs(extraSpecs);
    this.driver.validateQosSpecs(qosSpecs);
    const id = input.id ?? newId();
    return {
      class: "Volume",
      id,
      name: input.name ?? id,
      description: input.description ?? "",
      backend: this.name,
      pool,
      sizeGiB: input.sizeGiB,
      status: "creating",
      extraSpecs,
      qosSpecs,
      metadata: input.metadata ?? {},
      ...extra,
      createdAt: now(),
      updatedAt: now(),
    };
  }

  /** The pool to use (the default when none is given), checked to hold `sizeGiB`. */
  async checkPlacement(pool: string | undefined, sizeGiB: number, field = "sizeGiB"): Promise<string> {
    const chosen = pool ?? this.driver.defaultPool();
    if (!this.driver.poolNames().includes(chosen)) {
      throw new InvalidInputError("pool", `backend ${this.name} has no pool ${JSON.stringify(chosen)}; pools: ${this.driver.poolNames().join(", ")}`);
    }
    const max = await this.driver.maxSizeGiB(chosen);
    if (sizeGiB > max) {
      throw new InvalidInputError(field, `${sizeGiB} GiB is more than pool ${chosen} can ever hold (at most ${max} GiB)`);
    }
    return chosen;
  }

  /** Progress as a callback for one operation and as a "progress" event on the backend. */
  progressFor(operation: string, objectId: string, onProgress?: (p: Progress) => void) {
    return {
      onProgress: (p: Progress) => {
        onProgress?.(p);
        this.emit("progress", { operation, objectId, ...p } satisfies ProgressEvent);
      },
    };
  }

  async volumes(): Promise<Volume[]> {
    await this.ready();
    const records = await this.persistence.getVolumes({ backend: this.name });
    return records.map((r) => new Volume(this, r));
  }

  async snapshots(volumeId?: string): Promise<Snapshot[]> {
    await this.ready();
    const records = await this.persistence.getSnapshots({ backend: this.name, volumeId });
    return records.map((r) => new Snapshot(this, r));
  }

  async connections(volumeId?: string): Promise<Connection[]> {
    await this.ready();
    const records = await this.persistence.getConnections({ backend: this.name, volumeId });
    return records.map((r) => new Connection(this, r));
  }

  /** A volume by id (in any case) or by name. */
  async getVolume(ref: string): Promise<Volume> {
    await this.ready();
    const byId = isId(ref) ? await this.persistence.getVolumes({ backend: this.name, id: normalizeId(ref) }) : [];
    const found = byId.length ? byId : await this.persistence.getVolumes({ backend: this.name, name: ref });
    if (!found.length) throw new NotFoundError("volume", ref, { hint: `list volumes with \`kindling volume list --backend ${this.name}\`` });
    return new Volume(this, found[0]);
  }

  /** A snapshot by id (in any case) or by name. */
  async getSnapshot(ref: string): Promise<Snapshot> {
    await this.ready();
    const byId = isId(ref) ? await this.persistence.getSnapshots({ backend: this.name, id: normalizeId(ref) }) : [];
    const found = byId.length ? byId : await this.persistence.getSnapshots({ backend: this.name, name: ref });
    if (!found.length) throw new NotFoundError("snapshot", ref, { hint: `list snapshots with \`kindling snapshot list --backend ${this.name}\`` });
    return new Snapshot(this, found[0]);
  }

  /**
   * Repairs every object of this backend that a dead process left mid-operation (each one would
   * be repaired anyway by the next operation on it), and every connection it left half made.
   * For checks and tools; nothing else needs it.
   */
  async settle(): Promise<void> {
    for (const volume of await this.volumes()) await volume.settle();
    for (const snapshot of await this.snapshots()) await snapshot.settle();
    for (const connection of await this.connections()) await connection.settle();
  }

  /** Throws an InvalidInputError naming the connector field at fault. */
  validateConnector(protocol: string, connector: unknown): void {
    const parsed = parseInput(connectorSchema, connector, "connector");
    if (isServedProtocol(protocol)) validateServedConnector(parsed);
    else this.driver.validateConnector(protocol, parsed);
  }

  /** Every record of this backend, for stateless callers to keep and `load()` later. */
  async dump(): Promise<BackendDump> {
    await this.ready();
    const filter = { backend: this.name };
    return {
      class: "Backend",
      name: this.name,
      driver: this.driverName,
      records: [
        ...(await this.persistence.getVolumes(filter)),
        ...(await this.persistence.getSnapshots(filter)),
        ...(await this.persistence.getConnections(filter)),
      ],
    };
  }

  /**
   * Objects back from `dump()` output (a BackendDump, one record, or a list). With `save`, the
   * records are written to persistence too: the stateless mode's restore.
   */
  async load(json: unknown, opts: { save?: boolean } = {}): Promise<Array<Volume | Snapshot | Connection>> {
    await this.ready();
    const items = (typeof json === "string" ? JSON.parse(json) : json) as unknown;
    const records = Array.isArray(items) ? items : (items as BackendDump)?.class === "Backend" ? (items as BackendDump).records : [items];
    const objects: Array<Volume | Snapshot | Connection> = [];
    for (const record of records as AnyRecord[]) {
      if (record?.backend !== this.name) throw new InvalidInputError("backend", `record ${record?.id} belongs to backend ${JSON.stringify(record?.backend)}, not ${this.name}`);
      const object = record.class === "Volume" ? Volume.load(this, record) : record.class === "Snapshot" ? Snapshot.load(this, record) : record.class === "Connection" ? Connection.load(this, record) : undefined;
      if (!object) throw new InvalidInputError("class", `unknown record class ${JSON.stringify((record as { class?: unknown }).class)}`);
      if (opts.save) await object.save();
      objects.push(object);
    }
    return objects;
  }

  /** Closes persistence this backend opened itself. */
  async close(): Promise<void> {
    if (this.starting) await this.starting.catch(() => undefined);
    if (this.ownsPersistence && this.persistenceStore) await this.persistenceStore.close();
    this.persistenceStore = this.ownsPersistence ? undefined : this.persistenceStore;
    this.starting = undefined;
    this.driver.close?.();
  }
}

/** What the new volume records of its image: the source's word, and what was found and verified. */
function provenanceOfPrepared(prepared: PreparedImage): ImageProvenance {
  if (prepared.kind === "stream") {
    return provenanceOf(prepared.description, { format: prepared.format, sizeBytes: prepared.virtualSize, virtualSizeBytes: prepared.virtualSize });
  }
  const made = provenanceOf(prepared.description, { format: prepared.checked.inspection.format, sizeBytes: prepared.description.sizeBytes, virtualSizeBytes: prepared.virtualSize });
  return { ...made, ...(prepared.compression ? { compression: prepared.compression } : {}), digests: { ...made.digests, ...Object.fromEntries(prepared.digests) } };
}
