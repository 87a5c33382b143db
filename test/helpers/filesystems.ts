import { execFileSync } from "node:child_process";
import { closeSync, mkdirSync, openSync, rmSync, writeSync } from "node:fs";
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

/**
 * Makes a sparse image of `sizeMiB`, formats it (XFS with reflink on), attaches it to a loop
 * device and mounts it. Whatever step fails, the earlier ones are undone before the error
 * propagates, so a failed setup leaves no loop device, mount or directory behind.
 */
export function makeFilesystem(type: "ext4" | "xfs", sizeMiB: number): LoopFilesystem {
  const dir = tempDir(`kindling-${type}-`);
  const image = join(dir, "image");
  const mountpoint = join(dir, "mnt");
  let device: string | undefined;
  let mounted = false;
  const remove = () => {
    try {
      if (mounted) {
        // A lazy unmount as the last resort, so a busy mount never keeps the loop device.
        try {
          run("umount", [mountpoint]);
        } catch {
          run("umount", ["--lazy", mountpoint]);
        }
        mounted = false;
      }
    } finally {
      try {
        if (device) run("losetup", ["--detach", device]);
        device = undefined;
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  };
  try {
    mkdirSync(mountpoint);
    run("truncate", ["-s", `${sizeMiB}M`, image]);
    if (type === "ext4") run("mkfs.ext4", ["-F", "-q", "-m", "0", image]);
    else run("mkfs.xfs", ["-f", "-q", "-m", "reflink=1", image]);
    device = run("losetup", ["--find", "--show", image]);
    run("mount", [device, mountpoint]);
    mounted = true;
  } catch (err) {
    remove();
    throw err;
  }
  return { mountpoint, device: device as string, remove };
}

/** Bytes free on the filesystem holding `path`. */
export function freeBytes(path: string): number {
  return Number(run("df", ["--output=avail", "-B1", path]).split("\n")[1].trim());
}

/** Fills the filesystem holding `dir` until it has no byte left; returns the file that did it. */
export function fill(dir: string): string {
  const file = join(dir, "fill");
  const fd = openSync(file, "w");
  try {
    for (const size of [16 * 1024 * 1024, 1024 * 1024, 4096, 512, 1]) {
      const chunk = Buffer.alloc(size, 1);
      try {
        for (;;) writeSync(fd, chunk);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
      }
    }
  } finally {
    closeSync(fd);
  }
  return file;
}
