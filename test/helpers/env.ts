import { execFileSync } from "node:child_process";
import { closeSync, fsyncSync, mkdtempSync, openSync, readSync, readdirSync, rmSync, statSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";

export const isRoot = process.getuid?.() === 0;

/** Skips a test that needs root (loop devices, mounts), saying why. CI runs as root. */
export function needsRoot(t: TestContext): boolean {
  if (isRoot) return false;
  t.skip("needs root: losetup and mount");
  return true;
}

export function tempDir(prefix = "kindling-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Every file under `dir` (relative paths), for "nothing was created" checks. */
export function listTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, prefix: string) => {
    for (const name of readdirSync(d)) {
      const rel = prefix ? `${prefix}/${name}` : name;
      out.push(rel);
      if (statSync(join(d, name)).isDirectory()) walk(join(d, name), rel);
    }
  };
  walk(dir, "");
  return out.sort();
}

/** Size in bytes of a block device, as the kernel sees it. */
export function deviceSize(device: string): number {
  return Number(execFileSync("blockdev", ["--getsize64", device]).toString().trim());
}

/** The 1000-byte pattern cinderlib's functional tests write. */
export const PATTERN = Buffer.from("0123456789".repeat(100));

export function sh(command: string, args: string[]): string {
  return execFileSync(command, args, { stdio: ["ignore", "pipe", "pipe"] }).toString();
}

/** Size in bytes of a block device as lsblk reports it (what cinderlib's tests check). */
export function lsblkSize(device: string): number {
  return Number(execFileSync("lsblk", ["-bdno", "SIZE", device]).toString().trim());
}

/**
 * Extents of a file that `filefrag -v` flags as shared (reflinked with another file), and the
 * total extent count. Works on XFS and btrfs; other filesystems never report "shared".
 */
export function sharedExtents(path: string): { shared: number; total: number } {
  const out = execFileSync("filefrag", ["-v", path]).toString();
  // Extent lines look like "   0:        0..    1023:    2621..  3644:   1024:        shared,last,eof".
  const lines = out.split("\n").filter((l) => /^\s*\d+:\s+\d+\.\.\s*\d+:/.test(l));
  return { shared: lines.filter((l) => /\bshared\b/.test(l)).length, total: lines.length };
}

/** Bytes a file really occupies on disk (st_blocks), as opposed to its apparent size. */
export function allocatedBytes(path: string): number {
  return statSync(path).blocks * 512;
}

/** Writes `data` at `offset` of a device or file, synced, as a program using it would. */
export function writeDevice(device: string, data: Buffer, offset = 0): void {
  const fd = openSync(device, "r+");
  try {
    writeSync(fd, data, 0, data.length, offset);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** `length` bytes at `offset` of a device or file; a short read is an error. */
export function readRange(path: string, length: number, offset = 0): Buffer {
  const fd = openSync(path, "r");
  try {
    const buffer = Buffer.alloc(length);
    const got = readSync(fd, buffer, 0, length, offset);
    if (got !== length) throw new Error(`short read from ${path}: ${got} of ${length} bytes`);
    return buffer;
  } finally {
    closeSync(fd);
  }
}

