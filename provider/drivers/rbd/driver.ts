import type {
  BackendStats, BlockDevice, DriverSnapshot, DriverVolume, Inspection, ModelUpdate, OpenTarget,
  OperationOptions, PoolStats, QemuAccess, VolumeDriver,
} from "../contract";
import type { ConnectionInfo, Specs } from "../contract";
import { validateQosSpecs } from "../qos";
import { QOS_TO_LIBRBD, rbdExtraSpecsSchema, type RbdConfig, type RbdExtraSpecs } from "./config";
import { CephAccess } from "./ceph";
import { attachmentCaps, attachmentUser, derivedKey, isAttachmentUser, keyringText, secretUuid } from "./cephx";
import { RbdBlockDevice } from "./blockdevice";
import { BackendError, InUseError, InvalidInputError, KindlingError } from "../../util/errors";
import { isId } from "../../util/names";
import { GiB, bytesToGiB } from "../../util/sizes";
import { logger } from "../../util/log";

export const RBD_DRIVER_VERSION = "1.0.0";

/** Snapshots kindling takes on a source volume to clone it; named after the clone. */
const CLONE_SNAP_PREFIX = "clone-";

interface ImageInfo {
  size: number;
  features: string[];
  parent?: { pool: string; image: string; snapshot: string };
}

interface SnapInfo {
  name: string;
  size: number;
  protected: string;
}

interface CephDfPool {
  name: string;
  stats: { stored: number; bytes_used: number; max_avail: number };
}

const isNotFound = (err: unknown) => err instanceof KindlingError && err.code === "NOT_FOUND";

/** How long a `ceph df` answer serves size checks before it is asked again. */
const CAPACITY_TTL_MS = 30_000;

/**
 * Volumes as RBD images in Ceph pools: `volume-<id>`, snapshots as RBD snapshots
 * `volume-<id>@snapshot-<id>`. Snapshots are instant; clones and volumes from snapshots are
 * copy-on-write clones of a protected snapshot (a clone of a volume clones a snapshot
 * `clone-<new id>` taken for it), flattened when the chain of parents would pass maxCloneDepth.
 */
export class RbdDriver implements VolumeDriver {
  readonly driverName = "rbd";
  readonly protocols = ["rbd"] as const;
  readonly attachProtocol = "rbd";
  private readonly pools: Map<string, string>;
  private access?: CephAccess;
  private capacity?: { at: number; pools: Map<string, CephDfPool["stats"]> };
  private clusterFsid?: string;
  /** `ceph auth import` was refused to this backend's user (attachmentUsers: auto). */
  private mayNotMakeUsers = false;

  constructor(
    readonly backendName: string,
    private readonly config: RbdConfig,
  ) {
    const entries: Array<[string, string]> = config.pools ? Object.entries(config.pools) : [[config.pool as string, config.pool as string]];
    this.pools = new Map(entries);
  }

  /** Credentials are written out on setup, not on construction: validating a config makes nothing. */
  private get ceph(): CephAccess {
    if (!this.access) throw new Error(`backend ${this.backendName} is not set up; await backend.ready() first`);
    return this.access;
  }

  /** Checks that the cluster answers and that every pool is there for this user. */
  async setup(): Promise<void> {
    this.access ??= new CephAccess(this.config);
    try {
      for (const [pool, cephPool] of this.pools) {
        await this.checkPool(cephPool, this.config.pools ? `pools.${pool}` : "pool", `list images in Ceph pool ${cephPool} (pool ${pool})`);
      }
    } catch (err) {
      // Nobody closes a backend that failed to open: its key file must not outlive the failure.
      this.close();
      throw err;
    }
  }

  /** The pool exists and this user may use it: `rbd ls` fails otherwise, naming which. */
  private async checkPool(cephPool: string, field: string, what: string): Promise<void> {
    await this.ceph.rbd(["ls", cephPool], what).catch((err) => {
      if (isNotFound(err)) throw new InvalidInputError(field, `Ceph pool ${JSON.stringify(cephPool)} does not exist`, { hint: "create it (ceph osd pool create; rbd pool init) or name another" });
      throw err;
    });
  }

  poolNames(): string[] {
    return [...this.pools.keys()];
  }

  defaultPool(): string {
    return this.poolNames()[0];
  }

  private cephPool(pool: string): string {
    const cephPool = this.pools.get(pool);
    if (!cephPool) throw new InvalidInputError("pool", `backend ${this.backendName} has no pool ${JSON.stringify(pool)}; pools: ${this.poolNames().join(", ")}`);
    return cephPool;
  }

  private checkedId(id: string): string {
    if (!isId(id)) throw new InvalidInputError("id", `${JSON.stringify(id)} is not a kindling id`);
    return id;
  }

  /** Ceph pool and image of a volume: images are named by id only, so no user-given name reaches Ceph. */
  private imageRef(volume: { pool: string; id: string }): { pool: string; image: string } {
    return { pool: this.cephPool(volume.pool), image: `volume-${this.checkedId(volume.id)}` };
  }

  /** `pool/volume-<id>`, as the rbd command names an image. */
  volumeSpec(volume: { pool: string; id: string }): string {
    const { pool, image } = this.imageRef(volume);
    return `${pool}/${image}`;
  }

  /** The image (`pool/volume-<id>`) a snapshot belongs to, and its name there. */
  private snapshotRef(snapshot: DriverSnapshot): { image: string; name: string } {
    return { image: this.volumeSpec({ pool: snapshot.pool, id: snapshot.volumeId }), name: `snapshot-${this.checkedId(snapshot.id)}` };
  }

  snapshotSpec(snapshot: DriverSnapshot): string {
    const { image, name } = this.snapshotRef(snapshot);
    return `${image}@${name}`;
  }

  // ---- stats and placement

  private async poolCapacity(refresh: boolean): Promise<Map<string, CephDfPool["stats"]>> {
    if (refresh || !this.capacity || Date.now() - this.capacity.at > CAPACITY_TTL_MS) {
      const df = await this.ceph.cephJson<{ pools: CephDfPool[] }>(["df"], "read pool capacity (ceph df)");
      this.capacity = { at: Date.now(), pools: new Map(df.pools.map((p) => [p.name, p.stats])) };
    }
    return this.capacity.pools;
  }

  async stats(): Promise<BackendStats> {
    const capacity = await this.poolCapacity(true);
    const pools: PoolStats[] = [];
    for (const [pool, cephPool] of this.pools) {
      const images = (await this.ceph.rbdJson<Array<{ image: string; size: number; snapshot?: string }>>(["ls", "-l", cephPool], `list images in ${cephPool}`)) ?? [];
      const volumes = images.filter((i) => i.image.startsWith("volume-") && i.snapshot === undefined);
      const stats = capacity.get(cephPool);
      const total = stats ? bytesToGiB(stats.bytes_used + stats.max_avail) : "unknown";
      pools.push({
        pool_name: pool,
        total_capacity_gb: total,
        free_capacity_gb: stats ? bytesToGiB(stats.max_avail) : "unknown",
        reserved_percentage: this.config.reservedPercentage,
        thin_provisioning_support: true,
        thick_provisioning_support: false,
        max_over_subscription_ratio: this.config.maxOverSubscriptionRatio,
        provisioned_capacity_gb: bytesToGiB(volumes.reduce((acc, v) => acc + v.size, 0)),
        allocated_capacity_gb: stats ? bytesToGiB(stats.stored) : 0,
        total_volumes: volumes.length,
        QoS_support: true,
        online_extend_support: true,
        multiattach: false,
        location_info: `rbd:${cephPool}`,
        ceph_pool: cephPool,
      });
    }
    const sum = (key: "total_capacity_gb" | "free_capacity_gb" | "provisioned_capacity_gb") =>
      pools.some((p) => typeof p[key] !== "number") ? "unknown" as const : Math.round(pools.reduce((acc, p) => acc + (p[key] as number), 0) * 100) / 100;
    return {
      volume_backend_name: this.backendName,
      vendor_name: "Open Source",
      driver_version: RBD_DRIVER_VERSION,
      storage_protocol: "ceph",
      total_capacity_gb: sum("total_capacity_gb"),
      free_capacity_gb: sum("free_capacity_gb"),
      reserved_percentage: this.config.reservedPercentage,
      thin_provisioning_support: true,
      thick_provisioning_support: false,
      max_over_subscription_ratio: this.config.maxOverSubscriptionRatio,
      provisioned_capacity_gb: sum("provisioned_capacity_gb") as number,
      total_volumes: pools.reduce((acc, p) => acc + p.total_volumes, 0),
      pools,
    };
  }

  /** Images are thin: a pool holds up to its capacity times the over-subscription ratio. */
  async maxSizeGiB(pool: string): Promise<number> {
    const stats = (await this.poolCapacity(false)).get(this.cephPool(pool));
    if (!stats) return 1024 * 1024;
    return Math.floor(((stats.bytes_used + stats.max_avail) * this.config.maxOverSubscriptionRatio) / GiB);
  }

  // ---- specs

  validateExtraSpecs(specs: Specs): void {
    this.parseExtraSpecs(specs);
  }

  private parseExtraSpecs(specs: Specs): RbdExtraSpecs {
    const parsed = rbdExtraSpecsSchema.safeParse(specs);
    if (parsed.success) return parsed.data;
    const issue = parsed.error.issues[0];
    const key = issue.code === "unrecognized_keys" ? issue.keys[0] : String(issue.path[0]);
    const rule = issue.code === "unrecognized_keys" ? "unknown extra spec for the rbd driver; known: features, stripe_unit, stripe_count, object_size, data_pool" : issue.message;
    throw new InvalidInputError(`extraSpecs.${key}`, rule);
  }

  validateQosSpecs(specs: Specs): void {
    validateQosSpecs(specs);
  }

  /** `rbd create`/`rbd clone` options from extra specs. */
  private imageOptions(specs: Specs): string[] {
    const s = this.parseExtraSpecs(specs);
    return [
      ...(s.features ? ["--image-feature", s.features.filter((f) => f !== "striping" && f !== "data-pool").join(",")] : []),
      ...(s.object_size ? ["--object-size", String(s.object_size)] : []),
      ...(s.stripe_unit ? ["--stripe-unit", String(s.stripe_unit), "--stripe-count", String(s.stripe_count)] : []),
      ...(s.data_pool ? ["--data-pool", s.data_pool] : []),
    ];
  }

  /** QoS specs become librbd's per-image limits; keys no longer given go back to the default. */
  async applyQos(volume: DriverVolume, qosSpecs: Specs): Promise<void> {
    const spec = this.volumeSpec(volume);
    for (const [key, setting] of Object.entries(QOS_TO_LIBRBD)) {
      if (qosSpecs[key] !== undefined) {
        await this.ceph.rbd(["config", "image", "set", spec, setting, qosSpecs[key]], `set ${setting} on ${spec}`);
      } else if (volume.qosSpecs[key] !== undefined) {
        await this.ceph.rbd(["config", "image", "remove", spec, setting], `remove ${setting} from ${spec}`).catch((err) => {
          if (!isNotFound(err)) throw err;
        });
      }
    }
  }

  // ---- volumes

  async createVolume(volume: DriverVolume): Promise<ModelUpdate> {
    const spec = this.volumeSpec(volume);
    await this.checkDataPool(volume.extraSpecs);
    await this.ceph.rbd(["create", "--size", `${volume.sizeGiB}G`, ...this.imageOptions(volume.extraSpecs), spec], `create image ${spec}`);
    await this.afterCreate(volume, spec);
    return { location: spec };
  }

  /**
   * `rbd create --data-pool` succeeds on a pool the user has no caps on, and every write to the
   * image then fails: a data pool is checked the way setup checks the backend's own pools.
   */
  private async checkDataPool(specs: Specs): Promise<void> {
    const dataPool = this.parseExtraSpecs(specs).data_pool;
    if (dataPool) await this.checkPool(dataPool, "extraSpecs.data_pool", `use Ceph pool ${dataPool} as a data pool`);
  }

  /** QoS on a new image; if that fails the image goes again, so nothing half made is left. */
  private async afterCreate(volume: DriverVolume, spec: string): Promise<void> {
    if (!Object.keys(volume.qosSpecs).length) return;
    try {
      await this.applyQos({ ...volume, qosSpecs: {} }, volume.qosSpecs);
    } catch (err) {
      await this.removeImage(spec).catch(() => undefined);
      throw err;
    }
  }

  private async removeImage(spec: string): Promise<void> {
    await this.ceph.rbd(["rm", spec], `delete image ${spec}`).catch((err) => {
      if (!isNotFound(err)) throw err;
    });
  }

  /**
   * Deletes the image. Snapshots kindling took to clone it go too: clones still made from them
   * are flattened first (or, with dependentClones "refuse", the delete is refused naming them).
   * The library has refused already when the volume has snapshots of its own.
   */
  async deleteVolume(volume: DriverVolume): Promise<void> {
    const spec = this.volumeSpec(volume);
    try {
      await this.removeImage(spec);
    } catch (err) {
      if (!(err instanceof BackendError) || !/has snapshots/.test(err.stderr ?? "")) throw err;
      const snaps = (await this.snapshotsOf(spec)) ?? [];
      const foreign = snaps.filter((s) => !s.name.startsWith(CLONE_SNAP_PREFIX));
      if (foreign.length) {
        throw new InUseError(`image ${spec} has snapshots: ${foreign.map((s) => s.name).join(", ")}`, { hint: "delete the volume's snapshots first" });
      }
      for (const snap of snaps) await this.removeSnapshot(spec, snap.name);
      await this.removeImage(spec);
    }
    if (volume.sourceVolumeId) await this.dropCloneSnapshot(volume);
  }

  /** After a clone is gone, the snapshot taken of its source for it is not needed either. */
  private async dropCloneSnapshot(clone: DriverVolume): Promise<void> {
    const source = this.volumeSpec({ pool: clone.pool, id: clone.sourceVolumeId as string });
    const snap = `${CLONE_SNAP_PREFIX}${this.checkedId(clone.id)}`;
    await this.removeSnapshot(source, snap).catch((err) => {
      // The source is busy or out of reach: the snapshot then goes when the source is deleted.
      logger().debug({ snapshot: `${source}@${snap}`, err: (err as Error).message }, "clone snapshot kept");
    });
  }

  async extendVolume(volume: DriverVolume, newSizeGiB: number): Promise<void> {
    const spec = this.volumeSpec(volume);
    await this.ceph.rbd(["resize", "--size", `${newSizeGiB}G`, spec], `extend image ${spec}`);
  }

  // ---- snapshots and clones

  async createSnapshot(snapshot: DriverSnapshot): Promise<ModelUpdate> {
    const spec = this.snapshotSpec(snapshot);
    await this.ceph.rbd(["snap", "create", spec], `create snapshot ${spec}`);
    return { location: spec };
  }

  async deleteSnapshot(snapshot: DriverSnapshot): Promise<void> {
    const { image, name } = this.snapshotRef(snapshot);
    await this.removeSnapshot(image, name);
  }

  /** The snapshots of an image, or undefined when the image is not there. */
  private async snapshotsOf(image: string): Promise<SnapInfo[] | undefined> {
    try {
      return (await this.ceph.rbdJson<SnapInfo[]>(["snap", "ls", image], `list snapshots of ${image}`)) ?? [];
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  private async findSnapshot(image: string, name: string): Promise<SnapInfo | undefined> {
    return (await this.snapshotsOf(image))?.find((s) => s.name === name);
  }

  /**
   * Removes snapshot `name` of `image`; a missing one is success. A protected snapshot is
   * unprotected first, after its clones are flattened (or, with dependentClones "refuse", the
   * removal is refused).
   */
  private async removeSnapshot(image: string, name: string): Promise<void> {
    const spec = `${image}@${name}`;
    const snap = await this.findSnapshot(image, name);
    if (!snap) return;
    if (snap.protected === "true") {
      // Another process may remove the snapshot meanwhile (a clone's delete drops the snapshot it
      // was made from): gone, or unprotected already, is what this step wanted anyway.
      const children = await this.ceph.rbdJson<Array<{ pool: string; image: string }>>(["children", spec], `list clones of ${spec}`)
        .catch((err) => (isNotFound(err) ? undefined : Promise.reject(err)));
      if (children === undefined) return;
      if (children.length && this.config.dependentClones === "refuse") {
        throw new InUseError(`${spec} has clones: ${children.map((c) => `${c.pool}/${c.image}`).join(", ")}`, {
          hint: "delete those volumes first, or set dependentClones to flatten",
        });
      }
      for (const child of children) await this.flatten(`${child.pool}/${child.image}`);
      await this.ceph.rbd(["snap", "unprotect", spec], `unprotect ${spec}`).catch((err) => {
        if (!isNotFound(err) && !/already unprotected/i.test(`${(err as { stderr?: string }).stderr ?? ""}${(err as Error).message}`)) throw err;
      });
    }
    await this.ceph.rbd(["snap", "rm", spec], `delete snapshot ${spec}`).catch((err) => {
      if (!isNotFound(err)) throw err;
    });
  }

  private async flatten(spec: string, opts: OperationOptions = {}, total = 0): Promise<void> {
    opts.onProgress?.({ done: 0, total });
    await this.ceph.rbd(["flatten", spec], `flatten ${spec}`);
    opts.onProgress?.({ done: total, total });
  }

  /** How many parents stand above an image. */
  private async cloneDepth(spec: string): Promise<number> {
    let depth = 0;
    let info = await this.info(spec);
    while (info.parent && depth <= this.config.maxCloneDepth) {
      depth++;
      info = await this.info(`${info.parent.pool}/${info.parent.image}`);
    }
    return depth;
  }

  private info(spec: string): Promise<ImageInfo> {
    return this.ceph.rbdJson<ImageInfo>(["info", spec], `read image ${spec}`);
  }

  /** Clones need a protected parent snapshot; one protected already (by an earlier clone) is fine. */
  private async protect(image: string, name: string): Promise<void> {
    await this.ceph.rbd(["snap", "protect", `${image}@${name}`], `protect ${image}@${name}`).catch(async (err) => {
      if ((await this.findSnapshot(image, name))?.protected !== "true") throw err;
    });
  }

  /**
   * A copy-on-write clone of snapshot `snapName` of `parentImage` (`parentBytes` long), protected
   * first (unless `protect` is false: a snapshot that is not kindling's is left as it is), grown
   * to the volume's size, flattened when the parent already stands `maxCloneDepth` deep. A
   * failure removes what was made. Says whether the clone was flattened.
   */
  private async cloneFrom(volume: DriverVolume, parentImage: string, snapName: string, parentBytes: number, opts: OperationOptions & { protect?: boolean }): Promise<{ spec: string; flattened: boolean }> {
    const spec = this.volumeSpec(volume);
    const snapSpec = `${parentImage}@${snapName}`;
    const depth = this.config.maxCloneDepth === 0 ? 0 : await this.cloneDepth(parentImage);
    const total = volume.sizeGiB * GiB;
    const flattened = depth >= this.config.maxCloneDepth;
    try {
      if (opts.protect !== false) await this.protect(parentImage, snapName);
      await this.ceph.rbd(["clone", ...this.imageOptions(volume.extraSpecs), snapSpec, spec], `clone ${snapSpec} to ${spec}`);
      if (volume.sizeGiB * GiB > parentBytes) await this.ceph.rbd(["resize", "--size", `${volume.sizeGiB}G`, spec], `grow ${spec}`);
      if (flattened) {
        logger().info({ image: spec, depth: depth + 1, maxCloneDepth: this.config.maxCloneDepth }, "flattening a clone past the maximum depth");
        await this.flatten(spec, opts, total);
      } else {
        opts.onProgress?.({ done: total, total });
      }
      await this.afterCreate(volume, spec);
    } catch (err) {
      await this.removeImage(spec).catch(() => undefined);
      throw err;
    }
    return { spec, flattened };
  }

  async cloneVolume(volume: DriverVolume, source: DriverVolume, opts: OperationOptions = {}): Promise<ModelUpdate> {
    const parent = this.volumeSpec(source);
    const snapName = `${CLONE_SNAP_PREFIX}${this.checkedId(volume.id)}`;
    await this.ceph.rbd(["snap", "create", `${parent}@${snapName}`], `snapshot ${parent} to clone it`);
    try {
      const { spec, flattened } = await this.cloneFrom(volume, parent, snapName, source.sizeGiB * GiB, opts);
      // A flattened clone no longer needs the snapshot it was made from.
      if (flattened) await this.removeSnapshot(parent, snapName);
      return { location: spec };
    } catch (err) {
      await this.removeSnapshot(parent, snapName).catch(() => undefined);
      throw err;
    }
  }

  async createVolumeFromSnapshot(volume: DriverVolume, snapshot: DriverSnapshot, opts: OperationOptions = {}): Promise<ModelUpdate> {
    const { image, name } = this.snapshotRef(snapshot);
    const { spec } = await this.cloneFrom(volume, image, name, snapshot.volumeSizeGiB * GiB, opts);
    return { location: spec };
  }

  /**
   * An image service's image in this cluster (Glance's rbd store: `rbd://FSID/POOL/IMAGE/SNAP`,
   * each part URL-quoted) as a clone of its snapshot, as Cinder's clone_image does. Undefined,
   * with nothing made, for any other URL, another cluster's fsid, or a snapshot this user cannot
   * read or that is not protected (the service protects its own; kindling never changes them).
   */
  async cloneFromLocation(volume: DriverVolume, location: string, opts: OperationOptions = {}): Promise<ModelUpdate | undefined> {
    const parsed = parseRbdLocation(location);
    if (!parsed) return undefined;
    const pass = (why: string) => {
      logger().debug({ location, backend: this.backendName, why }, "an image location this backend does not clone");
      return undefined;
    };
    if (parsed.fsid !== (await this.fsid())) return pass("another cluster");
    const parentImage = `${parsed.pool}/${parsed.image}`;
    let snap: SnapInfo | undefined;
    try {
      snap = await this.findSnapshot(parentImage, parsed.snapshot);
    } catch (err) {
      // No read access to the service's pool is a reason to copy, not to fail.
      if (err instanceof KindlingError) return pass(err.message);
      throw err;
    }
    if (!snap) return pass("no such image or snapshot");
    if (snap.protected !== "true") return pass("the snapshot is not protected");
    if (snap.size > volume.sizeGiB * GiB) return pass("the image is larger than the volume");
    await this.checkDataPool(volume.extraSpecs);
    const { spec } = await this.cloneFrom(volume, parentImage, parsed.snapshot, snap.size, { ...opts, protect: false });
    return { location: spec };
  }

  /** The cluster's fsid (`ceph fsid`), asked once: it never changes. */
  private async fsid(): Promise<string> {
    this.clusterFsid ??= (await this.ceph.cephJson<{ fsid: string }>(["fsid"], "read the cluster's fsid")).fsid;
    return this.clusterFsid;
  }

  // ---- truth for refresh

  async inspect(volume: DriverVolume): Promise<Inspection> {
    const spec = this.volumeSpec(volume);
    try {
      const info = await this.info(spec);
      return { exists: true, sizeBytes: info.size, sizeGiB: Math.ceil(info.size / GiB), location: spec };
    } catch (err) {
      if (isNotFound(err)) return { exists: false };
      throw err;
    }
  }

  async inspectSnapshot(snapshot: DriverSnapshot): Promise<Inspection> {
    const { image, name } = this.snapshotRef(snapshot);
    const snap = await this.findSnapshot(image, name);
    return snap ? { exists: true, sizeBytes: snap.size, sizeGiB: Math.ceil(snap.size / GiB), location: `${image}@${name}` } : { exists: false };
  }

  // ---- connections

  validateConnector(protocol: string, connector: Record<string, unknown>): void {
    if (!this.protocols.includes(protocol as "rbd")) {
      throw new InvalidInputError("protocol", `the rbd driver serves ${this.protocols.join(", ")} (and kindling serves nbd), not ${JSON.stringify(protocol)}`);
    }
    if (connector.host !== undefined && typeof connector.host !== "string") throw new InvalidInputError("connector.host", "must be a string");
  }

  /** The monitors as consumers reach them: from the cluster's own map, v1 addresses first. */
  private async monitors(): Promise<string[]> {
    const dump = await this.ceph.cephJson<{ mons: Array<{ public_addrs?: { addrvec: Array<{ type: string; addr: string }> }; addr?: string }> }>(["mon", "dump"], "read the monitor map");
    return dump.mons.map((m) => m.public_addrs?.addrvec.find((a) => a.type === "v1")?.addr ?? (m.addr ?? "").replace(/\/\d+$/, "")).filter(Boolean);
  }

  /**
   * Connection info in Cinder's shape (what os-brick's RBDConnector and Nova's libvirt driver
   * read): `name` pool/image, `hosts`/`ports` of the monitors, `auth_username`, `keyring` (the
   * keyring's contents, as os-brick takes it), `secret_type`/`secret_uuid` (the libvirt secret
   * that holds the key), and kindling's own `key`, `monitors`, `pool`, `image`, `auth_scope`.
   * No path on this host: a consumer elsewhere could not read it, and one here would be handed
   * the backend's own conf and keyring.
   *
   * The user is the connection's own (`auth_scope: attachment`, see cephx.ts) when kindling may
   * make users, else the backend's (`auth_scope: backend`), whose key is then no admin's.
   */
  async initializeConnection(volume: DriverVolume, protocol: string, connector: Record<string, unknown>, opts: { attachMode: "rw" | "ro"; connectionId?: string }): Promise<ConnectionInfo> {
    this.validateConnector(protocol, connector);
    const { pool, image } = this.imageRef(volume);
    const spec = `${pool}/${image}`;
    const parentPools = await this.parentPools(spec);
    const monitors = await this.monitors();
    const fsid = await this.fsid();
    const own = opts.connectionId !== undefined ? await this.makeAttachmentUser(opts.connectionId, pool, parentPools) : undefined;
    const user = own ?? this.config.user;
    const key = own ? derivedKey(this.ceph.key as string, own) : this.ceph.key;
    return {
      driver_volume_type: "rbd",
      data: {
        name: spec,
        pool,
        image,
        monitors,
        hosts: monitors.map((m) => m.replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1")),
        ports: monitors.map((m) => /:(\d+)$/.exec(m)?.[1] ?? "6789"),
        cluster_name: "ceph",
        cluster_fsid: fsid,
        auth_enabled: key !== undefined,
        auth_username: user,
        auth_scope: own ? "attachment" : "backend",
        secret_type: "ceph",
        secret_uuid: secretUuid(fsid, user),
        ...(key ? { key, keyring: keyringText(user, key) } : {}),
        access_mode: opts.attachMode,
        volume_id: volume.id,
        discard: true,
        ...(Object.keys(volume.qosSpecs).length ? { qos_specs: { ...volume.qosSpecs } } : {}),
      },
    };
  }

  /** The pools of the image's clone parents (their data is read through the clone). */
  private async parentPools(spec: string): Promise<string[]> {
    const pools: string[] = [];
    let info = await this.info(spec);
    for (let depth = 0; info.parent && depth < 64; depth++) {
      pools.push(info.parent.pool);
      info = await this.info(`${info.parent.pool}/${info.parent.image}`);
    }
    return pools;
  }

  /**
   * Makes (or updates) the connection's own cephx user, with caps on the volume's pool only.
   * Undefined when the backend's user is to be handed out: `attachmentUsers: never`, no key to
   * derive one from, or (auto) the backend's user may not make users, so it is no admin.
   */
  private async makeAttachmentUser(connectionId: string, pool: string, parentPools: string[]): Promise<string | undefined> {
    const mode = this.config.attachmentUsers;
    if (mode === "never" || (mode === "auto" && this.mayNotMakeUsers)) return undefined;
    if (!this.ceph.key) {
      if (mode === "always") throw new InvalidInputError("attachmentUsers", "needs the backend's key (key or keyring) to derive each attachment's key from");
      return undefined;
    }
    const user = attachmentUser(connectionId);
    try {
      await this.ceph.importKeyring(keyringText(user, derivedKey(this.ceph.key, user), attachmentCaps(pool, parentPools)), `create cephx user client.${user}`);
    } catch (err) {
      const refused = err instanceof KindlingError && /EACCES|access denied|Permission denied|not permitted|not allowed/i.test(`${err.message}\n${(err as BackendError).stderr ?? ""}`);
      if (mode === "auto" && refused) {
        this.mayNotMakeUsers = true;
        logger().info({ backend: this.backendName, user: this.config.user }, "this user may not make cephx users: connections hand out its own key");
        return undefined;
      }
      throw err;
    }
    return user;
  }

  connectionSecrets(info: ConnectionInfo): Record<string, string> {
    const backendKey = this.access?.key;
    if (!backendKey) return {};
    const user = typeof info.data.auth_username === "string" ? info.data.auth_username : this.config.user;
    const key = info.data.auth_scope === "attachment" && isAttachmentUser(user) ? derivedKey(backendKey, user) : backendKey;
    return { key, keyring: keyringText(user, key) };
  }

  /** Removes the connection's own cephx user: its consumer can no longer reach the cluster. */
  async terminateConnection(_volume: DriverVolume, _protocol: string, _connector: Record<string, unknown>, info?: ConnectionInfo): Promise<void> {
    const user = info?.data.auth_username;
    if (info?.data.auth_scope !== "attachment" || typeof user !== "string" || !isAttachmentUser(user)) return;
    await this.ceph.cephCommand(["auth", "rm", `client.${user}`], `remove cephx user client.${user}`).catch((err) => {
      if (!isNotFound(err)) throw err;
    });
  }

  async open(target: OpenTarget, opts: { readOnly: boolean }): Promise<BlockDevice> {
    if (target.kind === "snapshot") {
      const snapshot = target.snapshot;
      const ref = this.imageRef({ pool: snapshot.pool, id: snapshot.volumeId });
      return RbdBlockDevice.open(this.ceph, { ...ref, snapshot: this.snapshotRef(snapshot).name }, true);
    }
    return RbdBlockDevice.open(this.ceph, this.imageRef(target.volume), opts.readOnly);
  }

  /**
   * qemu-img reaches the image through its own rbd driver (librbd), with no qemu-nbd and no NBD
   * in between: pool, image, conf and user as options, the key as a secret object that reads
   * the key file (never on a command line), a snapshot as `snapshot` (read-only by nature).
   */
  async qemuAccess(target: OpenTarget, _opts: { readOnly: boolean }): Promise<QemuAccess> {
    const ref = target.kind === "snapshot" ? { ...this.imageRef({ pool: target.snapshot.pool, id: target.snapshot.volumeId }), snapshot: this.snapshotRef(target.snapshot).name } : this.imageRef(target.volume);
    const file: Record<string, string> = { driver: "rbd", pool: ref.pool, image: ref.image, conf: this.ceph.confPath, user: this.ceph.user };
    if ("snapshot" in ref) file.snapshot = ref.snapshot;
    const objects: string[] = [];
    if (this.ceph.keyFile) {
      file["key-secret"] = "kindling-rbd-key";
      objects.push(`secret,id=kindling-rbd-key,file=${this.ceph.keyFile},format=base64`);
    }
    return { file, objects, close: async () => undefined };
  }

  close(): void {
    this.access?.close();
    this.access = undefined;
  }
}

/** `rbd://FSID/POOL/IMAGE/SNAP` (glance_store's and Cinder's form, parts URL-quoted), or undefined. */
export function parseRbdLocation(url: string): { fsid: string; pool: string; image: string; snapshot: string } | undefined {
  if (!url.startsWith("rbd://")) return undefined;
  const parts = url.slice("rbd://".length).split("/");
  if (parts.length !== 4) return undefined;
  let decoded: string[];
  try {
    decoded = parts.map((p) => decodeURIComponent(p));
  } catch {
    return undefined;
  }
  // Each part is a name, nothing that could reach a command as an option or a path.
  if (decoded.some((p) => !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(p))) return undefined;
  const [fsid, pool, image, snapshot] = decoded;
  return { fsid, pool, image, snapshot };
}
