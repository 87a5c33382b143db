import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "./env";

/** A small real filesystem on a loop device, mounted under a temp dir; `remove()` undoes it. */
export interface LoopFilesystem {
  mountpoint: string;
  device: string;
  remove(): void;
}

function run(command: string, args: string[]): string {
  return execFileSync(command, args, { stdio: ["ignore", "pipe", "pipe"] }).toString().trim();
}

export function makeFilesystem(type: "ext4" | "xfs", sizeMiB: number): LoopFilesystem {
  const dir = tempDir(`kindling-${type}-`);
  const image = join(dir, "image");
  const mountpoint = join(dir, "mnt");
  mkdirSync(mountpoint);
  run("truncate", ["-s", `${sizeMiB}M`, image]);
  if (type === "ext4") run("mkfs.ext4", ["-F", "-q", "-m", "0", image]);
  else run("mkfs.xfs", ["-f", "-q", "-m", "reflink=1", image]);
  const device = run("losetup", ["--find", "--show", image]);
  try {
    run("mount", [device, mountpoint]);
  } catch (err) {
    run("losetup", ["--detach", device]);
    throw err;
  }
  return {
    mountpoint,
    device,
    remove() {
      try {
        run("umount", [mountpoint]);
      } finally {
        try {
          run("losetup", ["--detach", device]);
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      }
    },
  };
}

/** Bytes free on the filesystem holding `path`. */
export function freeBytes(path: string): number {
  return Number(run("df", ["--output=avail", "-B1", path]).split("\n")[1].trim());
}
