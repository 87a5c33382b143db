import { execFileSync } from "node:child_process";
import { mkdirSync, unlinkSync } from "node:fs";
import { join } from "node:path";

// A loop-mounted XFS with reflink for the benchmarks whose rows need one (clones that cost the
// same at any size): a sparse file of `sizeGiB` in `dir`, mounted at `dir`/xfs. Needs root.

function sh(command: string, args: string[]): string {
  return execFileSync(command, args, { stdio: ["ignore", "pipe", "inherit"] }).toString().trim();
}

export function makeXfs(dir: string, sizeGiB: number): { pool: string; remove: () => void } {
  const image = join(dir, "xfs.img");
  const mnt = join(dir, "xfs");
  mkdirSync(mnt);
  sh("truncate", ["-s", `${sizeGiB}G`, image]);
  sh("mkfs.xfs", ["-f", "-q", "-m", "reflink=1", image]);
  const device = sh("losetup", ["--find", "--show", image]);
  sh("mount", [device, mnt]);
  return {
    pool: join(mnt, "volumes"),
    remove: () => {
      sh("umount", [mnt]);
      sh("losetup", ["--detach", device]);
      unlinkSync(image);
    },
  };
}
