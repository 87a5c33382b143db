import type { ConnectionInfo } from "../persistence/records";
import { detachLoop, loopsBacking } from "./loop";
import { releaseNbdfuse } from "./nbdfuse";
import { releaseRbdFuse } from "./rbd";

// What an attach leaves on this host if it is cut short (kill -9 between making the device and
// recording it), or what outlived its record: found from the connection info and the
// attachment's name (its connection id), never from a record that was not written.

/**
 * Whether devices of `protocol` can be found from the volume alone, with no record naming them:
 * loop devices over a volume's file can; the others hang off a FUSE mount named by its record.
 */
export function findsUnrecordedDevices(protocol: string | undefined): boolean {
  return protocol === "local";
}

/** Loop devices over the volume's own file (protocol local); other protocols go through a mount. */
export async function devicesBacking(info: ConnectionInfo): Promise<string[]> {
  if (info.driver_volume_type !== "local" || typeof info.data.device_path !== "string") return [];
  return loopsBacking(info.data.device_path);
}

/**
 * Releases the devices (and FUSE mounts) made for the attachment `name`, or for any attachment
 * of the volume when no name is given, except the devices in `keep` (which records hold).
 */
export async function releaseLeftovers(info: ConnectionInfo, name: string | undefined, keep: string[]): Promise<void> {
  for (const device of await devicesBacking(info)) if (!keep.includes(device)) await detachLoop(device);
  if (name && info.driver_volume_type === "nbd") await releaseNbdfuse(name, keep);
  if (name && info.driver_volume_type === "rbd" && typeof info.data.image === "string") await releaseRbdFuse(name, info.data.image, keep);
}
