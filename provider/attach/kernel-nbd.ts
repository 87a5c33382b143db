import { existsSync, readdirSync } from "node:fs";
import { BackendError, InvalidInputError } from "../util/errors";
import { run } from "../util/run";

// Local attach through the kernel's NBD client, where the host has the nbd module and the
// nbd-client tool: a /dev/nbdN straight from the export, no FUSE in between.

/** True when this host can attach NBD exports in the kernel. */
export function kernelNbdAvailable(): boolean {
  if (!existsSync("/sys/module/nbd")) return false;
  return ["/usr/sbin/nbd-client", "/sbin/nbd-client", "/usr/bin/nbd-client"].some((p) => existsSync(p));
}

/** A /dev/nbdN that no client holds (the kernel shows a pid for connected ones). */
function freeDevice(): string {
  for (const name of readdirSync("/sys/block").filter((n) => /^nbd\d+$/.test(n)).sort((a, b) => Number(a.slice(3)) - Number(b.slice(3)))) {
    if (!existsSync(`/sys/block/${name}/pid`)) return `/dev/${name}`;
  }
  throw new BackendError("no free /dev/nbd device", { hint: "load the nbd module with more devices (modprobe nbd nbds_max=...)" });
}

export async function attachKernelNbd(data: Record<string, unknown>, opts: { readOnly: boolean }): Promise<string> {
  const { host, port, export_name: name } = data;
  if (typeof host !== "string" || typeof port !== "number" || typeof name !== "string") {
    throw new InvalidInputError("connectionInfo.data", "needs host, port and export_name");
  }
  const device = freeDevice();
  await run("nbd-client", [host, String(port), device, "-N", name, ...(opts.readOnly ? ["-readonly"] : [])]);
  return device;
}

export async function detachKernelNbd(device: string): Promise<void> {
  if (!/^\/dev\/nbd\d+$/.test(device)) throw new InvalidInputError("devicePath", `${JSON.stringify(device)} is not an nbd device`);
  await run("nbd-client", ["-d", device]);
}
