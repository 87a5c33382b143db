import { constants, existsSync, readdirSync, type BigIntStats, type Stats } from "node:fs";
import { lstat, open, realpath, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { InvalidInputError, BackendError, isErrno } from "../util/errors";
import { run } from "../util/run";

// Local attach through the kernel's loop driver: the one block-device path every Linux host
// has (this machine class has no nbd, rbd or iscsi modules). Needs root, as losetup does.

const LOOP_DEVICE = /^\/dev\/loop[0-9]+$/;

function checkDevice(device: string): void {
  if (!LOOP_DEVICE.test(device)) throw new InvalidInputError("devicePath", `${JSON.stringify(device)} is not a loop device`);
}

function rootHint(err: unknown): never {
  if (process.getuid?.() !== 0 && err instanceof BackendError) {
    throw new BackendError(`${err.message}`, { command: err.command, stderr: err.stderr, hint: "local attach needs root (losetup); run as root or connect over another protocol", cause: err });
  }
  throw err;
}

/**
 * Attaches `file` to a free loop device and returns its path. The file is opened without
 * following a link and must be a regular file: a volume's file replaced by a link must never
 * give a device over whatever the link points to. losetup gets that descriptor's /proc path;
 * it turns it back into the file's name and opens that, so the device is checked afterwards
 * to hold the very file we opened (a swap in between is caught, and the device released).
 */
export async function attachLoop(file: string, opts: { readOnly: boolean }): Promise<string> {
  const handle = await openBackingFile(file);
  try {
    const held = await handle.stat({ bigint: true });
    const args = ["--find", "--show", "--nooverlap", ...(opts.readOnly ? ["--read-only"] : []), `/proc/${process.pid}/fd/${handle.fd}`];
    const { stdout } = await run("losetup", args).catch(rootHint);
    const device = stdout.trim();
    checkDevice(device);
    const backing = await loopBacking(device);
    if (!backing || !sameFile(backing, held)) {
      await detachLoop(device);
      throw new BackendError(`${file} was replaced while it was being attached; the loop device was released`, {
        hint: "something outside kindling changes the files in the pool: find out what, then attach again",
      });
    }
    return device;
  } finally {
    await handle.close();
  }
}

/** The file to attach, opened read-only: never through a link, only a regular file. */
async function openBackingFile(file: string): Promise<FileHandle> {
  const entry = await lstat(file).catch((err) => {
    if (isErrno(err, "ENOENT")) throw new BackendError(`${file} does not exist`, { hint: "the volume's file was removed; delete the volume" });
    throw err;
  });
  if (!entry.isFile()) throw notRegular(file, entry);
  let handle: FileHandle;
  try {
    // O_NONBLOCK: a fifo swapped in after the look must not hang the open.
    handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if (isErrno(err, "ELOOP")) throw notRegular(file, "a symbolic link");
    throw err;
  }
  const opened = await handle.stat();
  if (!opened.isFile()) {
    await handle.close();
    throw notRegular(file, opened);
  }
  return handle;
}

function notRegular(file: string, entry: Stats | string): BackendError {
  const what = typeof entry === "string" ? entry
    : entry.isSymbolicLink() ? "a symbolic link"
    : entry.isDirectory() ? "a directory"
    : entry.isFIFO() ? "a fifo"
    : "a special file";
  return new BackendError(`${file} is ${what}, not a regular file; kindling never follows links to attach a file`, {
    hint: "only a volume's own file can be attached",
  });
}

/** Releases a loop device; one already gone is fine. */
export async function detachLoop(device: string): Promise<void> {
  checkDevice(device);
  const result = await run("losetup", ["--detach", device], { reject: false });
  if (result.exitCode !== 0 && !/No such device|No such file|not a block device/i.test(result.stderr)) {
    throw new BackendError(`losetup --detach ${device} failed: ${result.stderr}`, { command: `losetup --detach ${device}`, stderr: result.stderr });
  }
}

/** Makes the device show its file's current size after the file grew. */
export async function refreshLoopSize(device: string): Promise<void> {
  checkDevice(device);
  await run("losetup", ["--set-capacity", device]);
}

/** The file behind a loop device, or undefined when the device is not attached. */
export async function loopBackingFile(device: string): Promise<string | undefined> {
  checkDevice(device);
  const result = await run("losetup", ["--noheadings", "--output", "BACK-FILE", device], { reject: false });
  return result.exitCode === 0 && result.stdout.trim() ? result.stdout.trim() : undefined;
}

/** The file behind a loop device: its name (as the kernel shows it), inode and device. */
interface LoopBacking {
  file: string;
  inode: bigint;
  /** major:minor of the filesystem holding the file. */
  majorMinor: string;
}

async function loopBacking(device: string): Promise<LoopBacking | undefined> {
  checkDevice(device);
  const result = await run("losetup", ["--json", "--output", "BACK-INO,BACK-MAJ:MIN,BACK-FILE", device], { reject: false });
  if (result.exitCode !== 0) return undefined;
  const [row] = (JSON.parse(result.stdout) as { loopdevices: Record<string, unknown>[] }).loopdevices;
  // The inode from the text: a JSON number would lose the low digits of a 64-bit inode.
  const inode = /"back-ino":\s*(\d+)/.exec(result.stdout)?.[1];
  if (!row || inode === undefined || typeof row["back-file"] !== "string" || typeof row["back-maj:min"] !== "string") return undefined;
  return { inode: BigInt(inode), majorMinor: row["back-maj:min"].trim(), file: row["back-file"] };
}

/** glibc's major()/minor() of a dev_t, as losetup prints them. */
function majorMinor(dev: bigint): string {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & 0xfffff000n);
  const minor = (dev & 0xffn) | ((dev >> 12n) & 0xffffff00n);
  return `${major}:${minor}`;
}

function sameFile(backing: LoopBacking, stats: BigIntStats): boolean {
  return backing.inode === stats.ino && backing.majorMinor === majorMinor(stats.dev);
}

/**
 * True when `device` is now backed by `file`. Loop device numbers are reused as soon as they
 * are free, so a device path kept in a record (a stale handle, a record from before a reboot)
 * may name a device that now serves another volume or another program.
 */
export async function loopBacks(device: string, file: string): Promise<boolean> {
  const backing = await loopBacking(device);
  if (backing === undefined) return false;
  // The name itself is never followed: a link put in the file's place names some other file.
  const entry = await lstat(file, { bigint: true }).catch(() => undefined);
  if (entry?.isFile() && sameFile(backing, entry)) return true;
  // The file was unlinked while attached (and maybe something else put in its place): losetup
  // shows "<path> (deleted)", with the path as it was when attached (directories resolved).
  const deleted = / \(deleted\)$/.exec(backing.file);
  if (!deleted) return false;
  const directory = await realpath(dirname(file)).catch(() => dirname(file));
  return backing.file.slice(0, deleted.index) === join(directory, basename(file));
}

/**
 * Every loop device now over `file` (by inode and filesystem, never by following its name: a
 * link put in a pool names some other program's file). None when nothing is at `file`.
 */
export async function loopsBacking(file: string): Promise<string[]> {
  const entry = await lstat(file, { bigint: true }).catch(() => undefined);
  if (!entry?.isFile()) return [];
  // No loop device is set up at all (the common case on a host that attaches nothing): no need
  // to start losetup, which costs milliseconds more than anything else a delete does.
  if (!anyLoopAttached()) return [];
  const result = await run("losetup", ["--list", "--raw", "--noheadings", "--output", "NAME,BACK-INO,BACK-MAJ:MIN"], { reject: false });
  if (result.exitCode !== 0) return [];
  const devices: string[] = [];
  for (const line of result.stdout.split("\n")) {
    // --raw escapes the padding losetup puts in MAJ:MIN ("\x20\x20254:0").
    const [name, inode, majMin] = line.trim().split(/\s+/).map((field) => field.replaceAll("\\x20", ""));
    if (!name || !LOOP_DEVICE.test(name) || !/^\d+$/.test(inode ?? "") || !majMin) continue;
    if (sameFile({ file, inode: BigInt(inode), majorMinor: majMin }, entry)) devices.push(name);
  }
  return devices;
}

/** Whether any loop device has a backing file now: the kernel shows one for each in sysfs. */
function anyLoopAttached(): boolean {
  try {
    return readdirSync("/sys/block").some((name) => /^loop\d+$/.test(name) && existsSync(`/sys/block/${name}/loop/backing_file`));
  } catch {
    return true; // no sysfs to ask: let losetup say
  }
}
