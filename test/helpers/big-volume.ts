import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Backend, type Volume } from "../../provider/library";
import { GiB, MiB } from "../../provider/util/sizes";
import { kindling, type CliResult } from "./cli";
import { writeDevice } from "./env";
import { makeFilesystem, type LoopFilesystem } from "./filesystems";

export interface BigVolumeSetup {
  fs: LoopFilesystem;
  pool: string;
  configFile: string;
  /** bin/kindling on this backend. */
  k: (args: string[]) => CliResult;
  backend: Backend;
  /** 1 GiB of data to its last byte, so a copy cut short shows as zeroes at its end. */
  big: Volume;
}

/**
 * A file backend on a fresh loop-mounted ext4 of `sizeMiB` (no reflink there: a clone or a
 * snapshot is a copy that takes seconds, long enough to race with or kill) holding one volume,
 * "big". The caller closes the backend and removes the filesystem.
 */
export async function bigVolumeBackend(sizeMiB: number): Promise<BigVolumeSetup> {
  const fs = makeFilesystem("ext4", sizeMiB);
  const pool = join(fs.mountpoint, "volumes");
  const configFile = join(fs.mountpoint, "k.json");
  writeFileSync(configFile, JSON.stringify({ backends: { local: { driver: "file", path: pool } } }));
  const k = (args: string[]) => kindling(["--config", configFile, ...args]);
  assert.equal(k(["volume", "create", "big", "--size", "1"]).code, 0);
  const backend = await Backend.open({ name: "local", driver: "file", path: pool });
  const big = await backend.getVolume("big");
  const chunk = Buffer.alloc(4 * MiB, 0x5a);
  for (let at = 0; at < GiB; at += chunk.length) writeDevice(big.location as string, chunk, at);
  return { fs, pool, configFile, k, backend, big };
}
