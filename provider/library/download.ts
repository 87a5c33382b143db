import { constants } from "node:fs";
import { link, lstat, open, rename, unlink, type FileHandle } from "node:fs/promises";
import { createHash, randomBytes } from "node:crypto";
import { basename, dirname, join, resolve } from "node:path";
import type { BlockDevice, Progress } from "../drivers/contract";
import { BackendError, ConflictError, InterruptedError, InvalidInputError, KindlingError, NoSpaceError, errorMessage, isErrno } from "../util/errors";
import { GiB, MiB } from "../util/sizes";
import { isAllZero } from "../util/zero";

/** Large reads: each one is a request to the storage (an RBD round trip, an object GET). */
const CHUNK = 8 * MiB;
/** Reads in flight while earlier chunks are hashed and written: hides the storage's latency. */
const READ_AHEAD = 4;
/** Allocation is asked for this much at a time, so a huge volume's map never sits in memory whole. */
const EXTENT_WINDOW = 16 * GiB;
const ZEROES = Buffer.alloc(CHUNK);
/** The unit of holes in the image: a filesystem block. */
const SPARSE_BLOCK = 4096;

export interface DownloadOptions {
  /** Replace FILE when it exists (a regular file; a link is refused even so). */
  force?: boolean;
  onProgress?: (p: Progress) => void;
  /** Stops the copy; the partial file is removed and nothing is left at FILE. */
  signal?: AbortSignal;
}

export interface DownloadResult {
  /** Where the image is (an absolute path). */
  file: string;
  /** The image's size: the volume's or snapshot's, as the records hold it. */
  bytes: number;
  /** SHA-256 of the whole image, holes read as zeroes (what `sha256sum FILE` prints). */
  sha256: string;
  /** Bytes that held data and were written; the rest are holes in FILE. */
  dataBytes: number;
  /** What FILE takes on disk (st_blocks), once written. */
  allocatedBytes: number;
}

/**
 * Checks where an image may go, before anything is read or locked: FILE must be new, or with
 * `force` a regular file to replace. A link is always refused (it would send the image wherever
 * it points), and so is anything that is not a regular file (a device, a directory).
 */
export async function checkDownloadTarget(file: string, force = false): Promise<string> {
  if (typeof file !== "string" || file === "" || file.includes("\0")) throw new InvalidInputError("FILE", "must be a file path");
  const path = resolve(file);
  const stats = await lstat(path).catch((err) => (isErrno(err, "ENOENT") ? undefined : Promise.reject(err)));
  if (stats?.isSymbolicLink()) {
    throw new InvalidInputError("FILE", `${path} is a symbolic link; downloads never follow links`, { hint: "give the path it points to, if that is what you mean" });
  }
  if (stats && !stats.isFile()) throw new InvalidInputError("FILE", `${path} exists and is not a regular file; downloads write regular files only`);
  if (stats && !force) throw new ConflictError(`${path} already exists`, { field: "FILE", hint: "--force replaces it" });
  const parent = await lstat(dirname(path)).catch(() => undefined);
  if (!parent?.isDirectory()) throw new InvalidInputError("FILE", `${dirname(path)} is not a directory`);
  return path;
}

/**
 * Writes what `device` holds to `file` as a sparse raw image. Holes (and ranges the device says
 * read as zeroes) are seeked over, never read or written, and the blocks of read chunks that
 * turn out all zero are not written either, so FILE takes only the space of the data. The image
 * goes to a hidden file beside FILE and takes FILE's name only once whole and synced: a failure
 * or an abort leaves FILE as it was. `checkpoint` runs between chunks and may throw to stop the
 * copy (the caller lost its writer lock).
 */
export async function writeImage(device: BlockDevice, file: string, opts: DownloadOptions & { checkpoint?: () => void } = {}): Promise<DownloadResult> {
  const path = await checkDownloadTarget(file, opts.force);
  // Named after nothing of FILE's, so no name is too long; one per download, never reused.
  const partial = join(dirname(path), `.kindling-download-${process.pid}-${randomBytes(6).toString("hex")}`);
  // A volume's image may hold anything (keys, databases): readable by its owner only.
  const handle = await open(partial, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
    .catch((err) => Promise.reject(fileError(err, path)));
  let closed = false;
  try {
    await handle.truncate(device.size).catch((err) => Promise.reject(fileError(err, path)));
    const { sha256, dataBytes } = await copyInto(device, handle, path, opts);
    await handle.sync().catch((err) => Promise.reject(fileError(err, path)));
    const allocatedBytes = (await handle.stat()).blocks * 512;
    closed = true;
    await handle.close();
    await putInPlace(partial, path, opts.force ?? false);
    return { file: path, bytes: device.size, sha256, dataBytes, allocatedBytes };
  } catch (err) {
    if (!closed) await handle.close().catch(() => undefined);
    await unlink(partial).catch(() => undefined);
    throw err;
  }
}

type Piece = { offset: number; length: number; read?: Promise<Buffer> };

async function copyInto(device: BlockDevice, handle: FileHandle, path: string, opts: DownloadOptions & { checkpoint?: () => void }) {
  const hash = createHash("sha256");
  const total = device.size;
  let done = 0;
  let dataBytes = 0;
  let yielded = Date.now();
  const queue: Piece[] = [];
  opts.onProgress?.({ done, total });

  const stopIfAsked = () => {
    if (opts.signal?.aborted) throw new InterruptedError(`download to ${path} interrupted; the partial file was removed`);
    opts.checkpoint?.();
  };
  // Pieces finish in order (the hash needs it) while later reads are under way.
  const finish = async (piece: Piece) => {
    if (piece.read) {
      const data = await piece.read;
      hash.update(data);
      for (const [start, end] of nonZeroRuns(data)) {
        await writeAll(handle, data.subarray(start, end), piece.offset + start).catch((err) => Promise.reject(fileError(err, path)));
        dataBytes += end - start;
      }
    } else {
      // A hole: FILE is already that long and reads as zeroes there; only the hash sees them.
      hash.update(ZEROES.subarray(0, piece.length));
    }
    done += piece.length;
    opts.onProgress?.({ done, total });
    // Long runs of holes are hashed without waiting on anything: give signals and timers (the
    // writer lock's heartbeat) their turn now and then.
    if (Date.now() - yielded > 50) {
      await new Promise((r) => setImmediate(r));
      yielded = Date.now();
    }
    stopIfAsked();
  };

  try {
    for (let window = 0; window < total; window += EXTENT_WINDOW) {
      stopIfAsked();
      const extents = await device.extents(window, Math.min(EXTENT_WINDOW, total - window));
      for (const extent of extents) {
        for (let offset = extent.offset; offset < extent.offset + extent.length; offset += CHUNK) {
          const length = Math.min(CHUNK, extent.offset + extent.length - offset);
          const piece: Piece = { offset, length };
          if (!extent.zero) {
            const buffer = Buffer.allocUnsafe(length);
            piece.read = device.pread(buffer, offset).then(() => buffer);
            // Failures are seen when the piece finishes; until then nobody must call them unhandled.
            piece.read.catch(() => undefined);
          }
          queue.push(piece);
          while (queue.length > READ_AHEAD) await finish(queue.shift() as Piece);
        }
      }
    }
    while (queue.length) await finish(queue.shift() as Piece);
  } finally {
    // Reads still under way must end before the caller closes the device.
    await Promise.allSettled(queue.map((p) => p.read));
  }
  return { sha256: hash.digest("hex"), dataBytes };
}

/**
 * The runs of `data` that hold something other than zeroes, in filesystem blocks. Storage
 * reports allocation coarsely (an RBD object is 4 MiB), so a chunk it calls data may be mostly
 * zeroes: only the blocks that are not take space in the image.
 */
function* nonZeroRuns(data: Buffer): Generator<[number, number]> {
  let start = -1;
  for (let at = 0; at < data.length; at += SPARSE_BLOCK) {
    const end = Math.min(at + SPARSE_BLOCK, data.length);
    const zero = isAllZero(data.subarray(at, end));
    if (!zero && start < 0) start = at;
    if (zero && start >= 0) {
      yield [start, at];
      start = -1;
    }
  }
  if (start >= 0) yield [start, data.length];
}

async function writeAll(handle: FileHandle, data: Buffer, position: number): Promise<void> {
  for (let at = 0; at < data.length;) {
    const { bytesWritten } = await handle.write(data, at, data.length - at, position + at);
    at += bytesWritten;
  }
}

/**
 * Gives the whole image FILE's name. Without `force` through link(), which fails when FILE
 * appeared meanwhile: a file made by someone else during the copy is never replaced.
 */
async function putInPlace(partial: string, path: string, force: boolean): Promise<void> {
  if (force) {
    // Checked again: a link put there during the copy is refused, not replaced unseen.
    await checkDownloadTarget(path, true);
    await rename(partial, path).catch((err) => Promise.reject(fileError(err, path)));
  } else {
    try {
      await link(partial, path);
    } catch (err) {
      if (isErrno(err, "EEXIST")) throw new ConflictError(`${path} was created while the image was being written; it was left as it is`, { field: "FILE", hint: "--force replaces it" });
      throw fileError(err, path);
    }
    await unlink(partial);
  }
  // The new name is on disk too, not only the data.
  const dir = await open(dirname(path), constants.O_RDONLY | constants.O_DIRECTORY).catch(() => undefined);
  if (dir) await dir.sync().catch(() => undefined).finally(() => dir.close());
}

function fileError(err: unknown, path: string): KindlingError {
  if (err instanceof KindlingError) return err;
  if (isErrno(err, "ENOSPC", "EDQUOT")) return new NoSpaceError(`no space left for ${basename(path)} in ${dirname(path)}`, { cause: err });
  if (isErrno(err, "EFBIG")) return new InvalidInputError("FILE", `the filesystem of ${dirname(path)} cannot hold a file that large`);
  return new BackendError(`cannot write ${path}: ${errorMessage(err)}`, { cause: err });
}
