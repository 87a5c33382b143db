import { execFileSync } from "node:child_process";
import { lstatSync, readdirSync } from "node:fs";
import { join } from "node:path";
import type { Backend } from "../../provider/library";
import { GiB } from "../../provider/util/sizes";
import { processState } from "../../provider/util/owner";
import type { Lease } from "../../provider/persistence/records";

/**
 * Everything that is wrong between a file backend's records and its storage, as sentences (an
 * empty list when records and storage agree): every record has its file at the recorded size
 * and every file its record, no record is left mid-operation or holding a lease, connections
 * belong to volumes that exist and make them in-use, and every loop device over a volume file
 * is the one device a connection records. Tests assert the list is empty. A lease a dead
 * process left on a settled record is no problem (the next operation takes it over); one held
 * by a live process is, since nothing should be running when this is called.
 */
export async function recordsVersusStorage(backend: Backend, poolDir: string): Promise<string[]> {
  const problems: string[] = [];
  const volumes = (await backend.persistence.getVolumes({ backend: backend.name }));
  const snapshots = (await backend.persistence.getSnapshots({ backend: backend.name }));
  const connections = (await backend.persistence.getConnections({ backend: backend.name }));
  const files = new Map<string, number>();
  for (const name of readdirSync(poolDir)) {
    if (!name.startsWith("volume-") && !name.startsWith("snapshot-")) continue;
    const st = lstatSync(join(poolDir, name));
    if (!st.isFile()) problems.push(`${name} is not a regular file`);
    files.set(name, st.size);
  }
  for (const v of volumes) {
    const file = `volume-${v.id}`;
    if (!files.has(file)) problems.push(`volume ${v.name} (${v.status}): no file`);
    else if (files.get(file) !== v.sizeGiB * GiB) problems.push(`volume ${v.name}: record ${v.sizeGiB} GiB, file ${files.get(file)} bytes`);
    if (["creating", "extending", "deleting"].includes(v.status)) problems.push(`volume ${v.name} left ${v.status}`);
    if (liveLease(v.lease)) problems.push(`volume ${v.name} still leased (${v.lease?.operation}) by a live process`);
    files.delete(file);
  }
  for (const s of snapshots) {
    const file = `snapshot-${s.id}`;
    if (!files.has(file)) problems.push(`snapshot ${s.name} (${s.status}): no file`);
    else if (files.get(file) !== s.volumeSizeGiB * GiB) problems.push(`snapshot ${s.name}: record ${s.volumeSizeGiB} GiB, file ${files.get(file)} bytes`);
    if (["creating", "deleting"].includes(s.status)) problems.push(`snapshot ${s.name} left ${s.status}`);
    if (liveLease(s.lease)) problems.push(`snapshot ${s.name} still leased (${s.lease?.operation}) by a live process`);
    if (!volumes.some((v) => v.id === s.volumeId)) problems.push(`snapshot ${s.name}: its volume is gone`);
    files.delete(file);
  }
  for (const file of files.keys()) problems.push(`${file}: a file no record knows`);
  for (const v of volumes) {
    const own = connections.filter((c) => c.volumeId === v.id && !c.snapshotId);
    const expected = own.length ? "in-use" : "available";
    if ((v.status === "available" || v.status === "in-use") && v.status !== expected) problems.push(`volume ${v.name} is ${v.status} with ${own.length} connection(s)`);
  }
  const devices = loopDevices();
  for (const c of connections) {
    if (c.lease) problems.push(`connection ${c.id} still leased (${c.lease.operation}): an attach or disconnect not finished`);
    const volume = volumes.find((v) => v.id === c.volumeId);
    if (!volume) problems.push(`connection ${c.id}: its volume is gone`);
    if (c.devicePath && volume && devices.get(c.devicePath) !== join(poolDir, `volume-${volume.id}`)) {
      problems.push(`connection ${c.id} records ${c.devicePath}, which is backed by ${devices.get(c.devicePath) ?? "nothing"}`);
    }
  }
  for (const [device, file] of devices) {
    if (!file.startsWith(poolDir + "/")) continue;
    const holders = connections.filter((c) => c.devicePath === device);
    if (holders.length !== 1) problems.push(`${device} over ${file} is recorded by ${holders.length} connection(s)`);
  }
  const perFile = new Map<string, number>();
  for (const file of devices.values()) if (file.startsWith(poolDir + "/")) perFile.set(file, (perFile.get(file) ?? 0) + 1);
  for (const [file, count] of perFile) if (count > 1) problems.push(`${file} has ${count} loop devices`);
  return problems;
}

function liveLease(lease: Lease | undefined): boolean {
  return lease !== undefined && processState(lease.owner) !== "dead";
}

/** Loop devices and their backing files (" (deleted)" kept, so a device over a removed file shows). */
export function loopDevices(): Map<string, string> {
  const out = execFileSync("losetup", ["--list", "--noheadings", "--output", "NAME,BACK-FILE"]).toString();
  const map = new Map<string, string>();
  for (const line of out.split("\n")) {
    const match = /^(\/dev\/loop\d+)\s+(.*)$/.exec(line.trim());
    if (match) map.set(match[1], match[2].trim());
  }
  return map;
}

/** Detaches every loop device over a file under `dir` (test cleanup). */
export function detachLoopsUnder(dir: string): void {
  for (const [device, file] of loopDevices()) {
    if (file.startsWith(dir + "/")) execFileSync("losetup", ["--detach", device]);
  }
}
