import type { NativeTarget } from "../../drivers/contract";
import { logger } from "../../util/log";
import type { NativeServeOptions, NativeTransmissionModule } from "./module";

/** What serve() is handed for a device: a file's descriptor, or an RBD image opened for the connection. */
export type NativeDevice = Pick<NativeServeOptions, "device" | "rbd">;

let librbdMissing: string | null | undefined;

/**
 * The native side's hold on a device's storage, or undefined when it cannot have one: then the
 * connection is served by JavaScript, through the device's own methods. A file is its
 * descriptor. An RBD image is opened here through librbd (a cluster connection of its own, as
 * qemu-nbd would make), read-only when the export or the device is, or for a snapshot; where
 * librbd cannot be loaded (not installed, KINDLING_LIBRBD elsewhere) that is said once, in the
 * log, and rbd volumes keep the path through their private qemu-nbd.
 */
export async function openNativeDevice(module: NativeTransmissionModule, target: NativeTarget, readOnly: boolean): Promise<NativeDevice | undefined> {
  if (target.kind === "file") return { device: target.descriptor };
  if (librbdMissing === undefined) {
    librbdMissing = module.rbdAvailable();
    if (librbdMissing) logger().warn({ err: librbdMissing }, "librbd cannot be loaded; RBD volumes are served through qemu-nbd by the JavaScript path");
  }
  if (librbdMissing) return undefined;
  const spec = `${target.pool}/${target.image}${target.snapshot ? `@${target.snapshot}` : ""}`;
  try {
    const opened = await new Promise<{ handle: object; size: number }>((resolve, reject) =>
      module.rbdOpen(
        { conf: target.conf, user: target.user, keyFile: target.keyFile, pool: target.pool, image: target.image, snapshot: target.snapshot, readOnly, timeoutSeconds: target.timeoutSeconds },
        (err, result) => (err || !result ? reject(err ?? new Error("no image")) : resolve(result)),
      ),
    );
    return { rbd: opened.handle };
  } catch (err) {
    logger().warn({ image: spec, err: (err as Error).message }, "librbd could not open the image; the connection is served through qemu-nbd");
    return undefined;
  }
}

/** Lets go of a device that serve() was not handed after all. */
export function releaseNativeDevice(module: NativeTransmissionModule, device: NativeDevice): void {
  if (device.rbd) module.rbdClose(device.rbd);
}
