import { constants, type BigIntStats, type Stats } from "node:fs";
import { lstat, open, unlink, type FileHandle } from "node:fs/promises";
import { BackendError, NotFoundError, UnsafeFileError, isErrno } from "../../util/errors";

// Anyone who can write in a pool directory could put a symbolic link (or a fifo, a directory,
// a device) where a volume's file belongs, and kindling runs as root: following it would
// resize, copy or attach any file on the host. So pool files are opened with O_NOFOLLOW, the
// opened descriptor is checked to be a regular file, and all later work goes through that
// descriptor, never the name again: a swap after the check changes nothing kindling does.

const { O_RDONLY, O_RDWR, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK } = constants;

/** The volume or snapshot a pool file belongs to, so that errors can name it. */
export interface PoolObject {
  kind: "volume" | "snapshot";
  id: string;
  pool: string;
}

function who(owner: PoolObject | undefined): string {
  return owner ? `${owner.kind} ${owner.id} (pool ${owner.pool}): ` : "";
}

/** What a directory entry is, in words, for an entry that is not a regular file. */
function entryKind(stats: Stats | BigIntStats): string {
  if (stats.isSymbolicLink()) return "a symbolic link";
  if (stats.isDirectory()) return "a directory";
  if (stats.isFIFO()) return "a fifo";
  if (stats.isSocket()) return "a socket";
  if (stats.isBlockDevice()) return "a block device";
  if (stats.isCharacterDevice()) return "a character device";
  return "something else";
}

/** The refusal for a pool entry that is not a regular file. */
export function notRegularFile(path: string, owner: PoolObject | undefined, what: string): UnsafeFileError {
  const link = what === "a symbolic link";
  const kind = owner?.kind ?? "object";
  return new UnsafeFileError(
    `${who(owner)}${path} is ${what}, not a regular file; ${link ? "kindling never follows links in a pool" : "kindling uses only regular files in a pool"}`,
    {
      hint: link
        ? `remove the link and put the ${kind}'s own file back, or delete the ${kind} (that removes only the link, never what it points to)`
        : `move it out of the pool and put the ${kind}'s own file back, or move it out and delete the ${kind}`,
    },
  );
}

/** The error for a pool file that is gone: removed outside kindling, or deleted meanwhile. */
export function missingFile(path: string, owner: PoolObject | undefined): NotFoundError {
  if (!owner) return new NotFoundError("file", path);
  return new NotFoundError(owner.kind, owner.id, {
    hint: `its file ${path} is gone: another process deleted the ${owner.kind} meanwhile, or something outside kindling removed the file; if the ${owner.kind} is still listed, delete it`,
  });
}

/**
 * What is at `path`, without following a link: undefined when nothing is there; a refusal
 * when it is not a regular file. For callers that only look (inspect, stats).
 */
export async function poolEntry(path: string, owner?: PoolObject): Promise<Stats | undefined> {
  let stats: Stats;
  try {
    stats = await lstat(path);
  } catch (err) {
    if (isErrno(err, "ENOENT")) return undefined;
    throw err;
  }
  if (!stats.isFile()) throw notRegularFile(path, owner, entryKind(stats));
  return stats;
}

/**
 * Opens a pool file for reading or for reading and writing. Refused: a missing file
 * (NotFoundError), and anything that is not a regular file, even when it is swapped in between
 * the look and the open (O_NOFOLLOW refuses a link; the descriptor itself is checked).
 */
export async function openPoolFile(path: string, mode: "read" | "write", owner?: PoolObject): Promise<FileHandle> {
  // A look first, so a fifo or a device is refused without being opened (that can block or act).
  const entry = await poolEntry(path, owner);
  if (!entry) throw missingFile(path, owner);
  let handle: FileHandle;
  try {
    // O_NONBLOCK: a fifo swapped in after the look must not hang the open (it changes nothing
    // for a regular file).
    handle = await open(path, (mode === "write" ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_NONBLOCK);
  } catch (err) {
    throw openError(err, path, owner);
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw notRegularFile(path, owner, entryKind(stats));
    return handle;
  } catch (err) {
    await handle.close();
    throw err;
  }
}

/**
 * Creates a new, empty pool file and opens it for reading and writing. The create is
 * exclusive and never follows a link: whatever is already at `path` is refused, not replaced.
 */
export async function createPoolFile(path: string, owner?: PoolObject): Promise<FileHandle> {
  try {
    return await open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
  } catch (err) {
    if (isErrno(err, "EEXIST")) {
      throw new BackendError(`${who(owner)}${path} already exists; kindling never replaces what is in a pool`, {
        hint: "no record names it: move it out of the pool if it is not needed",
        cause: err,
      });
    }
    throw err;
  }
}

function openError(err: unknown, path: string, owner: PoolObject | undefined): unknown {
  if (isErrno(err, "ENOENT")) return missingFile(path, owner);
  if (isErrno(err, "ELOOP")) return notRegularFile(path, owner, "a symbolic link");
  if (isErrno(err, "EISDIR")) return notRegularFile(path, owner, "a directory");
  if (isErrno(err, "ENXIO")) return notRegularFile(path, owner, "a socket");
  return err;
}

/**
 * The path of an open descriptor, for an external tool that must see the file (fallocate,
 * qemu-img, losetup): the kernel resolves it to the very file the descriptor holds, whatever
 * the name in the pool has become since.
 */
export function descriptorPath(handle: FileHandle): string {
  return `/proc/${process.pid}/fd/${handle.fd}`;
}

/** True when `path` still names the file `handle` holds (not removed, not replaced). */
export async function stillNamed(path: string, handle: FileHandle): Promise<boolean> {
  const [held, named] = await Promise.all([handle.stat({ bigint: true }), lstat(path, { bigint: true }).catch(() => undefined)]);
  return named !== undefined && named.isFile() && named.dev === held.dev && named.ino === held.ino;
}

/**
 * After work on a descriptor: fails unless `path` still names that file. Work on a file that
 * another process removed meanwhile succeeds on the descriptor, and the result is lost.
 */
export async function assertStillNamed(path: string, handle: FileHandle, owner?: PoolObject): Promise<void> {
  if (await stillNamed(path, handle)) return;
  const entry = await lstat(path).catch(() => undefined);
  if (entry && !entry.isFile()) throw notRegularFile(path, owner, entryKind(entry));
  throw missingFile(path, owner);
}

/** Removes `path` when it still names the file `handle` holds; never someone else's file. */
export async function removeIfOurs(path: string, handle: FileHandle): Promise<void> {
  if (await stillNamed(path, handle).catch(() => false)) await unlink(path).catch(() => undefined);
}
