import { mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { statfs } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { InvalidInputError, NoSpaceError } from "../util/errors";
import { dataHome } from "../util/paths";

// Where an image that is not streamed straight into a volume is staged (a qcow2 to convert, a
// compressed image inflated): one private directory per copy, in a staging area on disk. Not
// /run or XDG_RUNTIME_DIR (memory: a 40 GiB image does not belong there) and not the OS temp
// dir (often tmpfs too, and shared by every user): by default `staging/` in kindling's data
// home, on the disk beside the embedded backend; KINDLING_STAGING_DIR or the library's
// `stagingDir` moves it (to the filesystem of the pool, say).
//
// Every copy removes its directory when it ends, whatever happened; a process killed between
// two steps cannot, so each directory is named after its host and pid, and the next copy on
// that host sweeps the directories of processes that are gone.

/** Directories of copies under way in this process, removed at exit if a copy could not. */
const live = new Set<string>();
process.once("exit", () => {
  for (const dir of live) rmSync(dir, { recursive: true, force: true });
});

/** The staging area: `stagingDir`, else $KINDLING_STAGING_DIR, else `staging/` in the data home. */
export function stagingArea(stagingDir?: string, env: NodeJS.ProcessEnv = process.env): string {
  return stagingDir ?? (env.KINDLING_STAGING_DIR || join(dataHome(env), "staging"));
}

/** This host's name as a directory name part (no separators). */
function hostPart(): string {
  return hostname().replace(/[^A-Za-z0-9.-]/g, "_") || "host";
}

/** Removes what copies of dead processes on this host left in `area`; returns what it removed. */
export function sweepStaging(area: string): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(area);
  } catch {
    return removed;
  }
  const host = hostPart();
  for (const name of names) {
    const m = /^stage-(.+)-(\d+)-[A-Za-z0-9]{6}$/.exec(name);
    // Another host's (a staging area on shared storage) is that host's to sweep.
    if (!m || m[1] !== host) continue;
    const pid = Number(m[2]);
    if (pid === process.pid) continue;
    try {
      process.kill(pid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ESRCH") {
        rmSync(join(area, name), { recursive: true, force: true });
        removed.push(name);
      }
    }
  }
  return removed;
}

export interface StagingFile {
  /** The directory of this copy (0700). */
  readonly dir: string;
  /** The file the image is staged into: absolute, in `dir`. */
  readonly path: string;
  /** Removes the directory and the file; safe to call more than once. */
  remove(): void;
}

/**
 * A fresh private staging file for one copy, after sweeping the leftovers of dead processes.
 * `needBytes`, when known, is checked against the free space first (a full disk is found
 * before the download, not at its end).
 */
export async function newStagingFile(opts: { stagingDir?: string; needBytes?: number } = {}): Promise<StagingFile> {
  const area = stagingArea(opts.stagingDir);
  mkdirSync(area, { recursive: true, mode: 0o700 });
  sweepStaging(area);
  if (opts.needBytes !== undefined) {
    const fs = await statfs(area);
    const free = fs.bavail * fs.bsize;
    if (free < opts.needBytes) {
      throw new NoSpaceError(`staging the image needs ${opts.needBytes} bytes, but only ${free} are free in ${area}`, {
        hint: "free space there, or stage elsewhere (KINDLING_STAGING_DIR, or stagingDir in the library)",
      });
    }
  }
  const dir = mkdtempSync(join(area, `stage-${hostPart()}-${process.pid}-`));
  live.add(dir);
  return {
    dir,
    path: join(dir, "image"),
    remove() {
      live.delete(dir);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A private directory (0700) for one copy in the staging area, named as newStagingFile's are
 * (so the next copy on this host sweeps it when this process dies first); the caller removes it.
 */
export async function makeStagingDir(stagingDir: string | undefined): Promise<string> {
  const area = stagingArea(stagingDir);
  try {
    mkdirSync(area, { recursive: true, mode: 0o700 });
    sweepStaging(area);
    return mkdtempSync(join(area, `stage-${hostPart()}-${process.pid}-`));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    if (code === "ENOSPC") throw new NoSpaceError(`no space to stage an image in ${area}`, { cause: err });
    throw new InvalidInputError("stagingDir", `cannot make a staging directory in ${area} (${code})`, { hint: "give a writable directory (stagingDir in the library; KINDLING_STAGING_DIR for the command)" });
  }
}
