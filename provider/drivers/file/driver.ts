import { constants as fsConstants } from "node:fs";
import { access, copyFile, lstat, mkdir, readdir, stat, statfs, unlink, type FileHandle } from "node:fs/promises";
import { hostname } from "node:os";
import { dirname, join, resolve, sep } from "node:path";
import type {
  BackendStats, BlockDevice, DriverSnapshot, DriverVolume, Inspection, ModelUpdate, OpenTarget, QemuAccess,
  OperationOptions, PoolStats, VolumeDriver,
} from "../contract";
import type { ConnectionInfo, Specs } from "../contract";
import { copyDevice } from "../copy";
import { validateQosSpecs } from "../qos";
import { fileExtraSpecsSchema, type FileConfig } from "./config";
import { FileBlockDevice } from "./blockdevice";
import { fileExtents } from "./extents";
import {
  assertStillNamed, createPoolFile, descriptorPath, notRegularFile, openPoolFile, poolEntry, removeIfOurs, type PoolObject,
} from "./poolfile";
import { BackendError, InvalidInputError, NoSpaceError, errorMessage, isErrno } from "../../util/errors";
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
  readonly independentClones = true;
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
        // EEXIST: the path is a file; ENOTDIR: one of the directories above it is.
        if (isErrno(err, "EEXIST", "ENOTDIR")) {
          const field = this.config.pools ? `pools.${pool}` : "path";
          throw new InvalidInputError(field, `${await firstNonDirectory(dir)} is not a directory`, {
            hint: "point the backend at a directory, or at a path where one can be made",
          });
        }
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

  /** A volume's or snapshot's file and what it belongs to (for errors naming it). */
  private volumeFile(volume: DriverVolume): PoolFileRef {
    return { path: this.volumePath(volume), owner: { kind: "volume", id: volume.id, pool: volume.pool }, size: gibToBytes(volume.sizeGiB) };
  }

  private snapshotFile(snapshot: DriverSnapshot): PoolFileRef {
    return { path: this.snapshotPath(snapshot), owner: { kind: "snapshot", id: snapshot.id, pool: snapshot.pool }, size: gibToBytes(snapshot.volumeSizeGiB) };
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
        // lstat: a link in the pool must not count whatever it points to.
        const st = await lstat(join(dir, entry));
        if (!st.isFile()) continue;
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
    const file = this.volumeFile(volume);
    const handle = await createPoolFile(file.path, file.owner);
    try {
      await handle.truncate(file.size);
      await this.preallocate(handle, 0, file.size, volume.extraSpecs.preallocation ?? "off");
      await assertStillNamed(file.path, handle, file.owner);
    } catch (err) {
      await removeIfOurs(file.path, handle);
      throw this.spaceError(err, `creating a ${volume.sizeGiB} GiB volume`);
    } finally {
      await handle.close();
    }
    return { location: file.path };
  }

  /**
   * Thick provisioning of [offset, offset+length). `falloc` reserves the blocks (harmless over
   * data); `full` writes zeroes, but only into the holes of the range: a re-run over a range
   * a client may already have written must never overwrite its data.
   */
  private async preallocate(handle: FileHandle, offset: number, length: number, mode: string): Promise<void> {
    if (length <= 0) return;
    if (mode === "falloc") {
      await run("fallocate", ["--keep-size", "--offset", String(offset), "--length", String(length), descriptorPath(handle)]);
    } else if (mode === "full") {
      const zeroes = Buffer.alloc(4 * MiB);
      for (const extent of await fileExtents(descriptorPath(handle), offset, length)) {
        if (!extent.hole) continue;
        const end = extent.offset + extent.length;
        for (let at = extent.offset; at < end; at += zeroes.length) {
          await handle.write(zeroes, 0, Math.min(zeroes.length, end - at), at);
        }
      }
      await handle.datasync();
    }
  }

  private spaceError(err: unknown, doing: string): unknown {
    if (err instanceof NoSpaceError) return new NoSpaceError(`no space left ${doing}`, { command: err.command, stderr: err.stderr, hint: "free space in the pool or use another pool; nothing was left behind", cause: err });
    if (isErrno(err, "ENOSPC", "EDQUOT")) return new NoSpaceError(`no space left ${doing}`, { hint: "free space in the pool or use another pool; nothing was left behind", cause: err });
    return err;
  }

  async deleteVolume(volume: DriverVolume): Promise<void> {
    await this.removeFile(this.volumeFile(volume));
  }

  /** unlink: a link in the pool goes, never what it points to. A directory is left alone. */
  private async removeFile(file: PoolFileRef): Promise<void> {
    await unlink(file.path).catch((err) => {
      if (isErrno(err, "EISDIR")) throw notRegularFile(file.path, file.owner, "a directory");
      if (!isErrno(err, "ENOENT")) throw err;
    });
  }

  /**
   * Grows the file to the new size and preallocates [recorded size, new size) as the volume's
   * specs ask. Idempotent: a run killed mid-way leaves the file grown and the preallocation
   * unfinished, and the next run, finding the file already at (or past) the new size, finishes
   * the preallocation instead of returning early. A file past the new size stays as it is:
   * shrinking it could drop data written there.
   */
  async extendVolume(volume: DriverVolume, newSizeGiB: number): Promise<void> {
    const file = this.volumeFile(volume);
    const newSize = gibToBytes(newSizeGiB);
    const handle = await openPoolFile(file.path, "write", file.owner);
    try {
      const { size: atEntry } = await handle.stat();
      // From the recorded size, or from the file's end when the file is shorter than that.
      const from = Math.min(file.size, atEntry);
      try {
        if (atEntry < newSize) await handle.truncate(newSize);
        await this.preallocate(handle, from, newSize - from, volume.extraSpecs.preallocation ?? "off");
        await assertStillNamed(file.path, handle, file.owner);
      } catch (err) {
        // Give back only what this call added, so the file is as the records still hold it.
        if (atEntry < newSize) await handle.truncate(atEntry).catch(() => undefined);
        throw this.spaceError(err, `extending to ${newSizeGiB} GiB`);
      }
    } finally {
      await handle.close();
    }
  }

  async cloneVolume(volume: DriverVolume, source: DriverVolume, opts: OperationOptions = {}): Promise<ModelUpdate> {
    const file = this.volumeFile(volume);
    await this.copyInto(this.volumeFile(source), file, 0o600, opts, "cloning");
    return { location: file.path };
  }

  async createSnapshot(snapshot: DriverSnapshot, volume: DriverVolume, opts: OperationOptions = {}): Promise<ModelUpdate> {
    const file = this.snapshotFile(snapshot);
    // Snapshots never change; the mode says so to anything else that opens the file.
    await this.copyInto(this.volumeFile(volume), file, 0o400, opts, "taking a snapshot");
    return { location: file.path };
  }

  async deleteSnapshot(snapshot: DriverSnapshot): Promise<void> {
    await this.removeFile(this.snapshotFile(snapshot));
  }

  async createVolumeFromSnapshot(volume: DriverVolume, snapshot: DriverSnapshot, opts: OperationOptions = {}): Promise<ModelUpdate> {
    const file = this.volumeFile(volume);
    await this.copyInto(this.snapshotFile(snapshot), file, 0o600, opts, "creating a volume from a snapshot");
    return { location: file.path };
  }

  /**
   * Copies the first `from.size` bytes of `from` (the size its records hold) into a new file
   * `to` of `to.size` bytes: a reflink first, else a sparse copy. The source is read through
   * its descriptor and the target is created exclusively and worked on through its own, so
   * neither name is followed anywhere. On any failure the new file is removed: nothing half
   * made is left.
   */
  private async copyInto(from: PoolFileRef, to: PoolFileRef, mode: number, opts: OperationOptions, doing: string): Promise<void> {
    const source = await openPoolFile(from.path, "read", from.owner);
    try {
      const target = await createPoolFile(to.path, to.owner);
      try {
        const cloned = await this.reflink(source, target);
        if (!cloned) {
          if (this.config.copyMode === "reflink") {
            throw new BackendError(`the filesystem under ${to.path} cannot reflink`, { hint: "use copyMode auto or copy, or a filesystem with reflink (XFS, btrfs)" });
          }
          await target.truncate(to.size);
          // Devices over the handles, not closed here: the handles are closed below.
          await copyDevice(FileBlockDevice.over(source, from.size, true), FileBlockDevice.over(target, to.size, false), { onProgress: opts.onProgress });
        } else {
          opts.onProgress?.({ done: from.size, total: from.size });
        }
        // A reflink takes the source file's size, which may differ from what its records hold.
        await target.truncate(to.size);
        await target.chmod(mode);
        // Another process may have deleted either while we copied: the copy would then be of
        // a volume that is gone, or into a file nobody can reach.
        await assertStillNamed(from.path, source, from.owner);
        await assertStillNamed(to.path, target, to.owner);
      } catch (err) {
        await removeIfOurs(to.path, target);
        throw this.spaceError(err, doing);
      } finally {
        await target.close();
      }
    } finally {
      await source.close();
    }
  }

  /** True when the copy was made by reflink; false when the filesystem cannot. */
  private async reflink(source: FileHandle, target: FileHandle): Promise<boolean> {
    if (this.config.copyMode === "copy") return false;
    try {
      // Both by descriptor path: the clone is of the file we hold into the file we made.
      await copyFile(descriptorPath(source), descriptorPath(target), fsConstants.COPYFILE_FICLONE_FORCE);
      return true;
    } catch (err) {
      if (isErrno(err, ...NO_REFLINK)) {
        logger().debug({ code: (err as NodeJS.ErrnoException).code }, "no reflink, copying");
        return false;
      }
      throw err;
    }
  }

  async inspect(volume: DriverVolume): Promise<Inspection> {
    return this.inspectFile(this.volumeFile(volume));
  }

  async inspectSnapshot(snapshot: DriverSnapshot): Promise<Inspection> {
    return this.inspectFile(this.snapshotFile(snapshot));
  }

  /** What the pool holds under the name, without following a link (a link is refused). */
  private async inspectFile(file: PoolFileRef): Promise<Inspection> {
    const st = await poolEntry(file.path, file.owner);
    if (!st) return { exists: false };
    return { exists: true, sizeBytes: st.size, sizeGiB: Math.ceil(st.size / GiB), allocatedBytes: st.blocks * 512, location: file.path };
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
    const file = this.volumeFile(volume);
    // Opened, not just looked at: the checks every user of the file makes (attach makes them
    // again on the file it gives the loop device).
    await (await openPoolFile(file.path, "read", file.owner)).close();
    return {
      driver_volume_type: "local",
      data: {
        device_path: file.path,
        access_mode: opts.attachMode,
        volume_id: volume.id,
        ...(Object.keys(volume.qosSpecs).length ? { qos_specs: { ...volume.qosSpecs } } : {}),
      },
    };
  }

  async terminateConnection(): Promise<void> {
    // Nothing is exported for a local file: the connection record is all there is.
  }

  /** A device of the size the records hold, whatever the file's size (see FileBlockDevice). */
  async open(target: OpenTarget, opts: { readOnly: boolean }): Promise<BlockDevice> {
    const file = target.kind === "snapshot" ? this.snapshotFile(target.snapshot) : this.volumeFile(target.volume);
    return FileBlockDevice.open(file.path, target.kind === "snapshot" || opts.readOnly, { size: file.size, owner: file.owner });
  }

  /**
   * The pool file handed to qemu-img open, as /dev/fd/3: opened here as every other open is
   * (never through a link), so qemu-img cannot be sent out of the pool by a name swapped later.
   */
  async qemuAccess(target: OpenTarget, opts: { readOnly: boolean }): Promise<QemuAccess> {
    const file = target.kind === "snapshot" ? this.snapshotFile(target.snapshot) : this.volumeFile(target.volume);
    const handle = await openPoolFile(file.path, target.kind === "snapshot" || opts.readOnly ? "read" : "write", file.owner);
    return { file: { driver: "file", filename: "/dev/fd/3" }, fds: [handle.fd], close: () => handle.close() };
  }
}

/** A file in a pool: its path, what it belongs to, and the size the records hold. */
interface PoolFileRef {
  path: string;
  owner: PoolObject;
  size: number;
}

/** The first part of `dir` (from the root down) that exists and is not a directory. */
async function firstNonDirectory(dir: string): Promise<string> {
  const chain: string[] = [];
  for (let p = dir; ; p = dirname(p)) {
    chain.unshift(p);
    if (dirname(p) === p) break;
  }
  for (const p of chain) {
    const st = await stat(p).catch(() => undefined);
    if (st && !st.isDirectory()) return p;
  }
  return dir;
}
