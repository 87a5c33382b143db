import { hostname } from "node:os";
import type { ConnectionInfo } from "../persistence/records";
import { InvalidInputError } from "../util/errors";
import { existsSync } from "node:fs";
import { attachLoop, detachLoop, loopBackingFile, loopBacks, refreshLoopSize } from "./loop";
import { attachNbd, detachNbd } from "./nbdfuse";
import { attachKernelNbd, detachKernelNbd, kernelNbdAvailable } from "./kernel-nbd";
import { libnbdUri } from "./protocols";
import { attachRbd, detachRbd, rbdFuseFile, refreshRbdFuseSize } from "./rbd";

/** The connector of this host, as os-brick's get_connector_properties would describe it. */
export function localConnector(): Record<string, unknown> {
  return { host: hostname(), ip: "127.0.0.1", platform: process.arch, os_type: process.platform, multipath: false };
}

/**
 * Makes a connection usable as a block device on this host. Each protocol has its own way in:
 * `local` is a file, which a loop device turns into a block device; `nbd` goes through the
 * kernel's nbd client where the host has one, else through nbdfuse and a loop device; `rbd`
 * through the kernel's rbd client where the host has one, else through rbd-fuse and a loop device.
 */
export async function attachLocally(info: ConnectionInfo, opts: { readOnly: boolean; name?: string }): Promise<string> {
  if (info.driver_volume_type === "local") {
    const path = info.data.device_path;
    if (typeof path !== "string") throw new InvalidInputError("connectionInfo.data.device_path", "is missing");
    return attachLoop(path, opts);
  }
  if (info.driver_volume_type === "nbd") {
    // The kernel client where the host has one (TLS exports go through nbdfuse, which speaks TLS).
    if (kernelNbdAvailable() && !info.data.tls) return attachKernelNbd(info.data, opts);
    const uri = libnbdUri(info.data);
    if (uri === undefined) throw new InvalidInputError("connectionInfo.data.uri", "is missing");
    return attachNbd(uri, opts);
  }
  if (info.driver_volume_type === "rbd") return attachRbd(info.data, opts);
  throw new InvalidInputError("protocol", `cannot attach a ${info.driver_volume_type} connection on this host`);
}

export async function detachLocally(info: ConnectionInfo, devicePath: string): Promise<void> {
  if (info.driver_volume_type === "local") {
    const path = info.data.device_path;
    if (typeof path !== "string") throw new InvalidInputError("connectionInfo.data.device_path", "is missing");
    // Only a device still backed by this connection's file is ours to release; one that was
    // freed and reused since (by another volume, another program) is left alone.
    if (await loopBacks(devicePath, path)) await detachLoop(devicePath);
  } else if (info.driver_volume_type === "rbd") await detachRbd(devicePath);
  else if (info.driver_volume_type !== "nbd") await detachLoop(devicePath);
  else if (devicePath.startsWith("/dev/nbd")) await detachKernelNbd(devicePath);
  else await detachNbd(devicePath);
}

/**
 * After the volume grew: make the attached device show the new size. An nbdfuse file keeps the
 * size the export had when it was mounted, so an NBD attachment needs a detach and attach.
 */
export async function refreshLocalSize(info: ConnectionInfo, devicePath: string): Promise<void> {
  // The kernel's rbd client follows the image's size by itself; rbd-fuse shows it to the loop.
  if (info.driver_volume_type === "local") await refreshLoopSize(devicePath);
  else if (info.driver_volume_type === "rbd" && devicePath.startsWith("/dev/loop")) await refreshRbdFuseSize(devicePath);
}

/**
 * True when `devicePath` still serves this connection: device numbers are reused, so a path in
 * a record (after a reboot, or a detach elsewhere) may now belong to something else.
 */
export async function stillAttached(info: ConnectionInfo, devicePath: string): Promise<boolean> {
  if (info.driver_volume_type === "local") return typeof info.data.device_path === "string" && loopBacks(devicePath, info.data.device_path);
  if (info.driver_volume_type === "rbd") {
    if (/^\/dev\/rbd\d+$/.test(devicePath)) return existsSync(devicePath);
    const file = await rbdFuseFile(devicePath);
    return file !== undefined && file.endsWith(`/${String(info.data.image)}`);
  }
  if (devicePath.startsWith("/dev/nbd")) return existsSync(`/sys/block/${devicePath.slice(5)}/pid`);
  return (await loopBackingFile(devicePath)) !== undefined;
}
