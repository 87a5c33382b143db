import { constants as fsConstants } from "node:fs";
import { access, chmod, copyFile, mkdir, open, readdir, stat, statfs, truncate, unlink } from "node:fs/promises";
import { hostname } from "node:os";
import { join, resolve, sep } from "node:path";
import type {
  BackendStats, BlockDevice, DriverSnapshot, DriverVolume, Inspection, ModelUpdate, OpenTarget,
  OperationOptions, PoolStats, VolumeDriver,
} from "../contract";
import type { ConnectionInfo, Specs } from "../../persistence/records";
import { copyDevice } from "../copy";
import { validateQosSpecs } from "../qos";
import { fileExtraSpecsSchema, type FileConfig } from "./config";
import { FileBlockDevice } from "./blockdevice";
import { BackendError, InvalidInputError, NoSpaceError, NotFoundError, errorMessage, isErrno } from "../../util/errors";
import { isId } from "../../util/names";
import { run } from "../../util/run";
import { GiB, MiB, bytesToGiB, gibToBytes } from "../../util/sizes";
import { logger } from "../../util/log";

export const FILE_DRIVER_VERSION = "1.0.0";

/** Errors meaning "this filesystem cannot reflink": fall back to a sparse copy. */
const NO_REFLINK = ["EOPNOTSUPP", "ENOTSUP", "EXDEV", "EINVAL", "ENOSYS", "ENOTTY"];

/**
 * Volumes as raw sparse files: `<pool dir>/volume-<id>`, snapshots `<pool dir>/snapshot-<id>`.
 * Files are named by id only, so no user-given name ever reaches the filesystem. Snapshots and
 * clones are reflinks where the filesystem has them (XFS with reflink, btrfs): constant time
 * whatever the size. Elsewhere they are sparse copies that skip holes and report progress.
 */
export class FileDriver implements VolumeDriver {
  readonly driverName = "file";
  readonly protocols = ["local"] as const;
  readonly attachProtocol = "local";
  private readonly pools: Map<string, string>;

  constructor(
    readonly backendName: string,
    private readonly config: FileConfig,
  ) {
    const entries = config.pools ? Object.entries(config.pools) : [[backendName, config.path as string]];
    this.pools = new Map(entries.map(([name, dir]) => [name, resolve(dir)]));
  }

  async setup(): Promise<void> {
    for (const [pool, dir] of this.pools) {
      try {
        await mkdir(dir, { recursive: true, mode: 0o750 });
        await access(dir, fsConstants.W_OK | fsConstants.R_OK);
      } catch (err) {
        throw new BackendError(`pool ${pool}: directory ${dir} is not usable: ${errorMessage(err)}`, {
          hint: "create it, or fix its permissions, or point the backend at another directory",
          cause: err,
        });
      }
    }
  }

  poolNames(): string[] {
    return [...this.pools.keys()];
  }

  defaultPool(): string {
    return this.poolNames()[0];
  }

  private poolDir(pool: string): string {
    const dir = this.pools.get(pool);
    if (!dir) throw new InvalidInputError("pool", `backend ${this.backendName} has no pool ${JSON.stringify(pool)}; pools: ${this.poolNames().join(", ")}`);
    return dir;
  }

  /** The file of a volume or snapshot. Ids are checked and the result must stay in the pool. */
  private pathOf(kind: "volume" | "snapshot", pool: string, id: string): string {
    if (!isId(id)) throw new InvalidInputError("id", `${JSON.stringify(id)} is not a kindling id`);
    const dir = this.poolDir(pool);
    const path = join(dir, `${kind}-${id}`);
    if (!path.startsWith(dir + sep)) throw new InvalidInputError("id", "resolves outside the pool");
    return path;
  }

  volumePath(volume: DriverVolume): string {
    return this.pathOf("volume", volume.pool, volume.id);
  }

  snapshotPath(snapshot: DriverSnapshot): string {
    return this.pathOf("snapshot", snapshot.pool, snapshot.id);
  }

  async stats(): Promise<BackendStats> {
    const pools: PoolStats[] = [];
    for (const [pool, dir] of this.pools) pools.push(await this.poolStats(pool, dir));
    const sum = (key: "total_capacity_gb" | "free_capacity_gb" | "provisioned_capacity_gb") =>
      Math.round(pools.reduce((acc, p) => acc + (p[key] as number), 0) * 100) / 100;
    return {
      volume_backend_name: this.backendName,
      vendor_name: "kindling",
      driver_version: FILE_DRIVER_VERSION,
      storage_protocol: "file",
      total_capacity_gb: sum("total_capacity_gb"),
      free_capacity_gb: sum("free_capacity_gb"),
      reserved_percentage: this.config.reservedPercentage,
      thin_provisioning_support: true,
      thick_provisioning_support: true,
      max_over_subscription_ratio: this.config.maxOverSubscriptionRatio,
      provisioned_capacity_gb: sum("provisioned_capacity_gb"),
      total_volumes: pools.reduce((acc, p) => acc + p.total_volumes, 0),
      pools,
    };
  }

  private async poolStats(pool: string, dir: string): Promise<PoolStats> {
    const fs = await statfs(dir);
    let provisioned = 0;
    let allocated = 0;
    let volumes = 0;
    for (const entry of await readdir(dir)) {
      if (!entry.startsWith("volume-")) continue;
      try {
        const st = await stat(join(dir, entry));
        provisioned += st.size;
        allocated += st.blocks * 512;
        volumes++;
      } catch (err) {
        if (!isErrno(err, "ENOENT")) throw err; // deleted while we looked
      }
    }
    return {
      pool_name: pool,
      total_capacity_gb: bytesToGiB(fs.blocks * fs.bsize),
      free_capacity_gb: bytesToGiB(fs.bavail * fs.bsize),
      reserved_percentage: this.config.reservedPercentage,
      thin_provisioning_support: true,
      thick_provisioning_support: true,
      max_over_subscription_ratio: this.config.maxOverSubscriptionRatio,
      provisioned_capacity_gb: bytesToGiB(provisioned),
      allocated_capacity_gb: bytesToGiB(allocated),
      total_volumes: volumes,
      QoS_support: true,
      online_extend_support: true,
      multiattach: false,
      location_info: `file:${hostname()}:${dir}`,
    };
  }

  validateExtraSpecs(specs: Specs): void {
    const parsed = fileExtraSpecsSchema.safeParse(specs);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const key = issue.code === "unrecognized_keys" ? issue.keys[0] : String(issue.path[0]);
      const rule = issue.code === "unrecognized_keys" ? "unknown extra spec for the file driver; known: preallocation" : issue.message;
      throw new InvalidInputError(`extraSpecs.${key}`, rule);
    }
  }

  validateQosSpecs(specs: Specs): void {
    validateQosSpecs(specs);
  }

  async maxSizeGiB(pool: string): Promise<number> {
    const fs = await statfs(this.poolDir(pool));
    return Math.floor((fs.blocks * fs.bsize) / GiB);
  }

  async createVolume(volume: DriverVolume): Promise<ModelUpdate> {
    const path = this.volumePath(volume);
    await this.makeFile(path, volume.sizeGiB, volume.extraSpecs.preallocation);
    return { location: path };
  }

  /** A new file of the size, preallocated as asked; removed again if that fails. */
  private async makeFile(path: string, sizeGiB: number, preallocation = "off"): Promise<void> {
    const handle = await open(path, "wx", 0o600);
    await handle.close();
    try {
      await truncate(path, gibToBytes(sizeGiB));
      await this.preallocate(path, 0, gibToBytes(sizeGiB), preallocation);
    } catch (err) {
      await unlink(path).catch(() => undefined);
      throw this.spaceError(err, `creating a ${sizeGiB} GiB volume`);
    }
  }

  private async preallocate(path: string, offset: number, length: number, mode: string): Promise<void> {
    if (mode === "falloc") {
      await run("fallocate", ["--keep-size", "--offset", String(offset), "--length", String(length), path]);
    } else if (mode === "full") {
      const handle = await open(path, "r+");
      try {
        const zeroes = Buffer.alloc(4 * MiB);
        for (let at = offset; at < offset + length; at += zeroes.length) {
          await handle.write(zeroes, 0, Math.min(zeroes.length, offset + length - at), at);
        }
        await handle.datasync();
      } finally {
        await handle.close();
      }
    }
  }

  private spaceError(err: unknown, doing: string): unknown {
    if (err instanceof NoSpaceError) return new NoSpaceError(`no space left ${doing}`, { command: err.command, stderr: err.stderr, hint: "free space in the pool or use another pool; nothing was left behind", cause: err });
    if (isErrno(err, "ENOSPC", "EDQUOT")) return new NoSpaceError(`no space left ${doing}`, { hint: "free space in the pool or use another pool; nothing was left behind", cause: err });
    return err;
  }

  async deleteVolume(volume: DriverVolume): Promise<void> {
    await unlink(this.volumePath(volume)).catch((err) => {
      if (!isErrno(err, "ENOENT")) throw err;
    });
  }

  async extendVolume(volume: DriverVolume, newSizeGiB: number): Promise<void> {
    const path = this.volumePath(volume);
    const { size } = await this.statOrMissing(path, "volume", volume.id);
    const newSize = gibToBytes(newSizeGiB);
    if (newSize <= size) return;
    try {
      await truncate(path, newSize);
      await this.preallocate(path, size, newSize - size, volume.extraSpecs.preallocation ?? "off");
    } catch (err) {
      // Give back what was added so the file matches the size the records still hold.
      await truncate(path, size).catch(() => undefined);
      throw this.spaceError(err, `extending to ${newSizeGiB} GiB`);
    }
  }

  private async statOrMissing(path: string, kind: string, id: string) {
    try {
      return await stat(path);
    } catch (err) {
      if (isErrno(err, "ENOENT")) throw new NotFoundError(`${kind} file for`, id, { hint: "the file was removed outside kindling; delete the record" });
      throw err;
    }
  }

  async cloneVolume(volume: DriverVolume, source: DriverVolume, opts: OperationOptions = {}): Promise<ModelUpdate> {
    const path = this.volumePath(volume);
    await this.copyInto(this.volumePath(source), path, volume.sizeGiB, opts, "cloning");
    return { location: path };
  }

  async createSnapshot(snapshot: DriverSnapshot, volume: DriverVolume, opts: OperationOptions = {}): Promise<ModelUpdate> {
    const path = this.snapshotPath(snapshot);
    await this.copyInto(this.volumePath(volume), path, volume.sizeGiB, opts, "taking a snapshot");
    // Snapshots never change; the mode says so to anything else that opens the file.
    await chmod(path, 0o400);
    return { location: path };
  }

  async deleteSnapshot(snapshot: DriverSnapshot): Promise<void> {
    await unlink(this.snapshotPath(snapshot)).catch((err) => {
      if (!isErrno(err, "ENOENT")) throw err;
    });
  }

  async createVolumeFromSnapshot(volume: DriverVolume, snapshot: DriverSnapshot, opts: OperationOptions = {}): Promise<ModelUpdate> {
    const path = this.volumePath(volume);
    await this.copyInto(this.snapshotPath(snapshot), path, volume.sizeGiB, opts, "creating a volume from a snapshot");
    return { location: path };
  }

  /**
   * Copies `from` to a new file `to` (reflink first, else sparse copy), then grows it to
   * `sizeGiB`. On any failure the new file is removed, so nothing half made is left.
   */
  private async copyInto(from: string, to: string, sizeGiB: number, opts: OperationOptions, doing: string): Promise<void> {
    const source = await this.statOrMissing(from, "source", from);
    try {
      const cloned = await this.reflink(from, to);
      if (!cloned) {
        if (this.config.copyMode === "reflink") {
          throw new BackendError(`the filesystem under ${to} cannot reflink`, { hint: "use copyMode auto or copy, or a filesystem with reflink (XFS, btrfs)" });
        }
        await this.sparseCopy(from, to, source.size, opts);
      } else {
        opts.onProgress?.({ done: source.size, total: source.size });
      }
      await chmod(to, 0o600);
      if (gibToBytes(sizeGiB) > source.size) await truncate(to, gibToBytes(sizeGiB));
    } catch (err) {
      // EEXIST: the exclusive create found a file that is not ours (another volume's or
      // snapshot's); removing it would lose that object's data.
      if (!isErrno(err, "EEXIST")) await unlink(to).catch(() => undefined);
      throw this.spaceError(err, doing);
    }
  }

  /** True when the copy was made by reflink; false when the filesystem cannot. */
  private async reflink(from: string, to: string): Promise<boolean> {
    if (this.config.copyMode === "copy") return false;
    try {
      await copyFile(from, to, fsConstants.COPYFILE_EXCL | fsConstants.COPYFILE_FICLONE_FORCE);
      return true;
    } catch (err) {
      if (isErrno(err, ...NO_REFLINK)) {
        await unlink(to).catch(() => undefined);
        logger().debug({ from, to, code: (err as NodeJS.ErrnoException).code }, "no reflink, copying");
        return false;
      }
      throw err;
    }
  }

  private async sparseCopy(from: string, to: string, size: number, opts: OperationOptions): Promise<void> {
    const created = await open(to, "wx", 0o600);
    await created.close();
    await truncate(to, size);
    const source = await FileBlockDevice.open(from, true);
    try {
      const target = await FileBlockDevice.open(to, false);
      try {
        await copyDevice(source, target, { onProgress: opts.onProgress });
      } finally {
        await target.close();
      }
    } finally {
      await source.close();
    }
  }

  async inspect(volume: DriverVolume): Promise<Inspection> {
    return this.inspectPath(this.volumePath(volume));
  }

  async inspectSnapshot(snapshot: DriverSnapshot): Promise<Inspection> {
    return this.inspectPath(this.snapshotPath(snapshot));
  }

  private async inspectPath(path: string): Promise<Inspection> {
    try {
      const st = await stat(path);
      return { exists: true, sizeBytes: st.size, sizeGiB: Math.ceil(st.size / GiB), allocatedBytes: st.blocks * 512, location: path };
    } catch (err) {
      if (isErrno(err, "ENOENT")) return { exists: false };
      throw err;
    }
  }

  validateConnector(protocol: string, connector: Record<string, unknown>): void {
    if (!this.protocols.includes(protocol as "local")) {
      throw new InvalidInputError("protocol", `the file driver serves ${this.protocols.join(", ")}, not ${JSON.stringify(protocol)}`);
    }
    if (connector.host !== undefined && typeof connector.host !== "string") {
      throw new InvalidInputError("connector.host", "must be a string");
    }
    // A file path means something only on the host that holds the file.
    if (typeof connector.host === "string" && connector.host !== hostname()) {
      throw new InvalidInputError("connector.host", `a local connection serves only this host (${hostname()}), not ${JSON.stringify(connector.host)}`, {
        hint: "use protocol nbd to reach the volume from another host",
      });
    }
  }

  async initializeConnection(volume: DriverVolume, protocol: string, connector: Record<string, unknown>, opts: { attachMode: "rw" | "ro" }): Promise<ConnectionInfo> {
    this.validateConnector(protocol, connector);
    const path = this.volumePath(volume);
    await this.statOrMissing(path, "volume", volume.id);
    return {
      protocol: "local",
      data: {
        device_path: path,
        access_mode: opts.attachMode,
        volume_id: volume.id,
        ...(Object.keys(volume.qosSpecs).length ? { qos_specs: { ...volume.qosSpecs } } : {}),
      },
    };
  }

  async terminateConnection(): Promise<void> {
    // Nothing is exported for a local file: the connection record is all there is.
  }

  async open(target: OpenTarget, opts: { readOnly: boolean }): Promise<BlockDevice> {
    if (target.kind === "snapshot") return FileBlockDevice.open(this.snapshotPath(target.snapshot), true);
    return FileBlockDevice.open(this.volumePath(target.volume), opts.readOnly);
  }
}
