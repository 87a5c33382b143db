import assert from "node:assert/strict";
import { readdirSync, readlinkSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

/** Waits until `check` holds, asking `tries` times `everyMs` apart; then fails naming `what`. */
export async function until(check: () => boolean | Promise<boolean>, what: string, opts: { tries?: number; everyMs?: number } = {}): Promise<void> {
  const { tries = 100, everyMs = 100 } = opts;
  for (let i = 0; i < tries; i++) {
    if (await check()) return;
    await sleep(everyMs);
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** How many descriptors this process has open on `path`. */
export function openFds(path: string): number {
  let n = 0;
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === path) n++;
    } catch {
      // closed while we looked
    }
  }
  return n;
}
