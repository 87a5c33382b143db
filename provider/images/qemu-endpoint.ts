import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BlockDevice, OpenTarget, VolumeDriver } from "../drivers/contract";
import { ExportTable } from "../nbd/exports";
import { NbdServer } from "../nbd/server";

// How qemu-img reaches a volume or snapshot as a raw image, on any backend: the driver's own
// way when it has one (a pool file handed over open, an rbd image), else kindling's NBD
// server on a unix socket in a directory only this user can enter, serving the BlockDevice
// for as long as qemu-img runs. Either way qemu-img is told the whole stack (`--image-opts`),
// so it never probes a format or guesses a protocol from a name.

export interface QemuEndpoint {
  /** The value of `--image-opts` (source) or `--target-image-opts` (target): `driver=raw,file.driver=...`. */
  imageOpts: string;
  /** `--object` values (secrets read from files), given before the image. */
  objects: string[];
  /** Descriptors the child inherits from fd 3 on, in order (the options name them /dev/fd/N). */
  fds: number[];
  /** How it is reached, for messages: "file", "rbd", "nbd". */
  via: string;
  /** After qemu-img has exited: closes descriptors, stops the NBD server and removes its socket. */
  close(): Promise<void>;
}

/** qemu's option syntax: a comma inside a value is written twice. */
function optionValue(value: string): string {
  return value.replaceAll(",", ",,");
}

export function renderImageOpts(file: Record<string, string>): string {
  return ["driver=raw", ...Object.entries(file).map(([k, v]) => `file.${k}=${optionValue(v)}`)].join(",");
}

/**
 * The endpoint for `target`. `device`, when given, is served over NBD instead of opening the
 * target again (a fill writing through the device it already holds); it is borrowed, never
 * closed here. `preferNbd` skips the driver's own way (tests; the bench's comparisons).
 */
export async function qemuEndpoint(driver: VolumeDriver, target: OpenTarget, opts: { readOnly: boolean; device?: BlockDevice; preferNbd?: boolean }): Promise<QemuEndpoint> {
  if (driver.qemuAccess && !opts.preferNbd) {
    const access = await driver.qemuAccess(target, { readOnly: opts.readOnly });
    return { imageOpts: renderImageOpts(access.file), objects: access.objects ?? [], fds: access.fds ?? [], via: access.file.driver ?? "driver", close: () => access.close() };
  }
  const open = opts.device ? async () => borrowed(opts.device as BlockDevice) : () => driver.open(target, { readOnly: opts.readOnly });
  return serveOverNbd(open, opts.readOnly);
}

/** A BlockDevice served on a fresh unix socket for one qemu-img run. */
export async function serveOverNbd(open: () => Promise<BlockDevice>, readOnly: boolean): Promise<QemuEndpoint> {
  const dir = await mkdtemp(join(tmpdir(), "kindling-qemu-"));
  const socketPath = join(dir, "nbd.sock");
  const exports = new ExportTable();
  exports.set({ name: "image", readOnly, open });
  const server = new NbdServer({ socketPath, exports });
  try {
    await server.listen();
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    imageOpts: renderImageOpts({ driver: "nbd", "server.type": "unix", "server.path": socketPath, export: "image" }),
    objects: [],
    fds: [],
    via: "nbd",
    close: async () => {
      try {
        await server.close();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}

/** The same device with a close that does nothing: the NBD server closes what it opened per connection. */
function borrowed(device: BlockDevice): BlockDevice {
  return {
    size: device.size,
    readOnly: device.readOnly,
    capabilities: device.capabilities,
    pread: (buffer, offset) => device.pread(buffer, offset),
    pwrite: (buffer, offset, o) => device.pwrite(buffer, offset, o),
    flush: () => device.flush(),
    trim: (offset, length) => device.trim(offset, length),
    zero: (offset, length, o) => device.zero(offset, length, o),
    extents: (offset, length) => device.extents(offset, length),
    close: async () => undefined,
  };
}
