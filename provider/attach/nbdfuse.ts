import { spawn } from "node:child_process";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { BackendError, InvalidInputError } from "../util/errors";
import { newId } from "../util/ids";
import { runtimeHome } from "../util/paths";
import { detachLoop, loopBackingFile, loopsBacking } from "./loop";
import { attachLoopOrUnmount, unmountFuse } from "./fuse";

// Local attach of an NBD export where the kernel has no nbd module (this machine class):
// nbdfuse shows the export as a file on a FUSE mount, and a loop device makes that file a
// block device. Detach undoes both.

/** Where the FUSE mounts live: one directory per attachment. */
function mountRoot(): string {
  return join(runtimeHome(), "nbdfuse");
}

/** The FUSE mount of the attachment called `name` (a connection id), so a repair can find it. */
export function nbdfuseDir(name: string): string {
  return join(mountRoot(), name);
}

export async function attachNbd(uri: string, opts: { readOnly: boolean; name?: string }): Promise<string> {
  if (!/^nbds?:\/\//.test(uri)) throw new InvalidInputError("connectionInfo.data.uri", `not an NBD URI: ${JSON.stringify(uri)}`);
  // A new export shows up at the server within its poll interval (a second): try a few times.
  for (let attempt = 1; ; attempt++) {
    try {
      return await mountAndLoop(uri, opts);
    } catch (err) {
      if (attempt >= 4 || !(err instanceof BackendError) || !/could not mount/.test(err.message)) throw err;
      await sleep(750);
    }
  }
}

async function mountAndLoop(uri: string, opts: { readOnly: boolean; name?: string }): Promise<string> {
  const dir = nbdfuseDir(opts.name ?? newId());
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const pidfile = join(dir, "..", `${dir.split("/").pop()}.pid`);
  const file = join(dir, "disk");
  const child = spawn("nbdfuse", [...(opts.readOnly ? ["-r"] : []), "-P", pidfile, file, uri], { detached: true, stdio: "ignore" });
  let failed: Error | undefined;
  child.once("error", (err) => (failed = err));
  child.once("exit", (code) => (failed ??= new Error(`nbdfuse exited with ${code}`)));
  child.unref();
  for (let i = 0; i < 100 && !existsSync(pidfile) && !failed; i++) await sleep(50);
  if (failed || !existsSync(pidfile)) {
    rmSync(dir, { recursive: true, force: true });
    throw new BackendError(`nbdfuse could not mount ${uri}: ${failed?.message ?? "timed out"}`, { hint: "is the export served (kindling nbd serve) and /dev/fuse present?" });
  }
  return attachLoopOrUnmount(file, opts, () => unmount(dir));
}

/** Releases what an attachment named `name` left: the loop device over its file, then the mount. */
export async function releaseNbdfuse(name: string, keep: string[]): Promise<void> {
  const dir = nbdfuseDir(name);
  for (const device of await loopsBacking(join(dir, "disk"))) if (!keep.includes(device)) await detachLoop(device);
  if (existsSync(dir) || existsSync(`${dir}.pid`)) await unmount(dir);
}

function unmount(dir: string): Promise<void> {
  return unmountFuse(dir, `${dir}.pid`, [dir]);
}

/** Releases the loop device, then the FUSE mount behind it. */
export async function detachNbd(device: string): Promise<void> {
  const file = await loopBackingFile(device);
  await detachLoop(device);
  if (file && file.startsWith(mountRoot() + "/")) await unmount(dirname(file));
}
