import { existsSync, readFileSync, rmSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { run } from "../util/run";
import { attachLoop } from "./loop";

/**
 * Unmounts a FUSE mount made for an attachment (nbdfuse, rbd-fuse), waits for the process that
 * served it to exit, and removes what was made for it. A server that does not exit (rbd-fuse
 * whose cluster has gone away waits for it forever) is ours to end.
 */
export async function unmountFuse(mountPoint: string, pidfile: string, remove: string[]): Promise<void> {
  await run("fusermount3", ["-u", mountPoint], { reject: false });
  const pid = existsSync(pidfile) ? Number(readFileSync(pidfile, "utf8").trim()) : 0;
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  for (let i = 0; pid > 0 && i < 100 && alive(); i++) await sleep(50);
  if (pid > 0 && alive()) process.kill(pid, "SIGKILL");
  for (const path of [...remove, pidfile]) rmSync(path, { recursive: true, force: true });
}

/** A loop device over a file on a FUSE mount; if none can be had, the mount goes again. */
export async function attachLoopOrUnmount(file: string, opts: { readOnly: boolean }, unmount: () => Promise<void>): Promise<string> {
  try {
    return await attachLoop(file, opts);
  } catch (err) {
    await unmount();
    throw err;
  }
}
