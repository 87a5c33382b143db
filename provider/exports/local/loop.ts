import { realpath } from "node:fs/promises";
import { InvalidInputError, BackendError } from "../../util/errors";
import { run } from "../../util/run";

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

/** Attaches `file` to a free loop device and returns its path. */
export async function attachLoop(file: string, opts: { readOnly: boolean }): Promise<string> {
  const args = ["--find", "--show", "--nooverlap", ...(opts.readOnly ? ["--read-only"] : []), file];
  const { stdout } = await run("losetup", args).catch(rootHint);
  const device = stdout.trim();
  checkDevice(device);
  return device;
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

/**
 * True when `device` is now backed by `file`. Loop device numbers are reused as soon as they
 * are free, so a device path kept in a record (a stale handle, a record from before a reboot)
 * may name a device that now serves another volume or another program.
 */
export async function loopBacks(device: string, file: string): Promise<boolean> {
  const backing = await loopBackingFile(device);
  if (backing === undefined) return false;
  const canonical = (p: string) => realpath(p).catch(() => p);
  // losetup shows "<path> (deleted)" when the file was unlinked while attached.
  return (await canonical(backing.replace(/ \(deleted\)$/, ""))) === (await canonical(file));
}
