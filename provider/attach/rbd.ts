import { spawn } from "node:child_process";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { BackendError, InvalidInputError } from "../util/errors";
import { newId } from "../util/ids";
import { runtimeHome } from "../util/paths";
import { run } from "../util/run";
import { detachLoop, loopBackingFile, loopsBacking, refreshLoopSize } from "./loop";
import { attachLoopOrUnmount, unmountFuse } from "./fuse";
import { monHostSetting } from "../drivers/rbd/ceph";

// Local attach of an `rbd` connection. Where the kernel has the rbd module, `rbd device map`
// gives a /dev/rbdN. Elsewhere (this machine class) rbd-fuse shows the one image as a file on a
// FUSE mount and a loop device makes it a block device; rbd-fuse reads the image's size afresh,
// so `losetup --set-capacity` shows a grown volume, as for the file backend.

interface RbdData {
  pool: string;
  image: string;
  user: string;
  monitors: string[];
  key?: string;
}

function rbdData(data: Record<string, unknown>): RbdData {
  const { pool, image, auth_username: user, monitors, key } = data;
  if (typeof pool !== "string" || typeof image !== "string" || typeof user !== "string" || !Array.isArray(monitors)) {
    throw new InvalidInputError("connectionInfo.data", "needs pool, image, auth_username and monitors");
  }
  return { pool, image, user, monitors: monitors.map(String), key: typeof key === "string" ? key : undefined };
}

export function kernelRbdAvailable(): boolean {
  return existsSync("/sys/bus/rbd/add_single_major") || existsSync("/sys/bus/rbd/add");
}

/** Where the FUSE mounts live: one directory per attachment, 0700, holding its key file. */
function mountRoot(): string {
  return join(runtimeHome(), "rbd-fuse");
}

/**
 * A ceph.conf and key file for the tools, in `dir` (0700), from the connection info alone; the
 * key never goes on a command line. Without a key in it, Ceph's own search for the user's
 * keyring (/etc/ceph/ceph.client.USER.keyring) applies, as for any consumer.
 */
function writeClientFiles(dir: string, d: RbdData): string {
  const conf = join(dir, "ceph.conf");
  const lines = ["[global]", `mon host = ${monHostSetting(d.monitors.join(","))}`];
  if (d.key) {
    writeFileSync(join(dir, "key"), d.key, { mode: 0o600 });
    lines.push(`keyfile = ${join(dir, "key")}`);
  }
  writeFileSync(conf, `${lines.join("\n")}\n`, { mode: 0o600 });
  return conf;
}

/** The rbd-fuse mount of the attachment called `name` (a connection id), so a repair can find it. */
export function rbdFuseDir(name: string): string {
  return join(mountRoot(), name);
}

export async function attachRbd(data: Record<string, unknown>, opts: { readOnly: boolean; name?: string }): Promise<string> {
  const d = rbdData(data);
  return kernelRbdAvailable() ? mapKernel(d, opts) : mountFuse(d, opts);
}

async function mapKernel(d: RbdData, opts: { readOnly: boolean }): Promise<string> {
  const dir = join(mountRoot(), `map-${newId()}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  try {
    const conf = writeClientFiles(dir, d);
    const { stdout } = await run("rbd", ["device", "map", "--conf", conf, "--id", d.user, ...(opts.readOnly ? ["--read-only"] : []), `${d.pool}/${d.image}`]);
    return stdout.trim();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function mountFuse(d: RbdData, opts: { readOnly: boolean; name?: string }): Promise<string> {
  const dir = rbdFuseDir(opts.name ?? newId());
  const mnt = join(dir, "mnt");
  mkdirSync(mnt, { recursive: true, mode: 0o700 });
  const conf = writeClientFiles(dir, d);
  // -f keeps it in the foreground so its pid is ours to record; detached, it outlives this process.
  // attr_timeout=0: the kernel would otherwise keep the file's size for a second after a resize,
  // and the loop device would take that stale size on extend.
  const child = spawn("rbd-fuse", ["-f", "-c", conf, "--id", d.user, "-p", d.pool, "-r", d.image, "-o", "attr_timeout=0", mnt], { detached: true, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  let failed: string | undefined;
  child.stderr?.on("data", (b: Buffer) => (stderr = (stderr + b.toString()).slice(-2000)));
  child.once("error", (err) => (failed = err.message));
  child.once("exit", (code) => (failed ??= `exited with ${code}`));
  writeFileSync(join(dir, "pid"), String(child.pid ?? ""));
  const file = join(mnt, d.image);
  for (let i = 0; i < 300 && !failed && !existsSync(file); i++) await sleep(50);
  if (failed || !existsSync(file)) {
    await unmount(dir);
    throw new BackendError(`rbd-fuse could not show ${d.pool}/${d.image}: ${failed ?? "timed out"}${stderr ? `: ${stderr.trim()}` : ""}`, {
      hint: "is rbd-fuse installed, /dev/fuse present and the cluster reachable with this user?",
    });
  }
  child.stderr?.destroy();
  child.unref();
  return attachLoopOrUnmount(file, opts, () => unmount(dir));
}

/** Releases what an attachment named `name` left: the loop device over the image's file, then the mount. */
export async function releaseRbdFuse(name: string, image: string, keep: string[]): Promise<void> {
  const dir = rbdFuseDir(name);
  for (const device of await loopsBacking(join(dir, "mnt", image))) if (!keep.includes(device)) await detachLoop(device);
  if (existsSync(dir)) await unmount(dir);
}

function unmount(dir: string): Promise<void> {
  return unmountFuse(join(dir, "mnt"), join(dir, "pid"), [dir]);
}

/** The rbd-fuse file behind a loop device, when the device is one of our rbd attachments. */
export async function rbdFuseFile(device: string): Promise<string | undefined> {
  if (!device.startsWith("/dev/loop")) return undefined;
  const file = await loopBackingFile(device);
  return file && file.startsWith(mountRoot() + "/") ? file : undefined;
}

/**
 * After a resize: the loop driver takes the size the kernel holds for the rbd-fuse file, which
 * only a stat brings up to date (rbd-fuse answers it from librbd, which has seen the resize).
 */
export async function refreshRbdFuseSize(device: string): Promise<void> {
  const file = await rbdFuseFile(device);
  if (file) await stat(file);
  await refreshLoopSize(device);
}

export async function detachRbd(device: string): Promise<void> {
  if (/^\/dev\/rbd\d+$/.test(device)) {
    await run("rbd", ["device", "unmap", device]);
    return;
  }
  const file = await rbdFuseFile(device);
  await detachLoop(device);
  // file = <root>/<id>/mnt/<image>
  if (file) await unmount(dirname(dirname(file)));
}
