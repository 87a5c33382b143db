import { readFileSync, readdirSync } from "node:fs";

/** A process as /proc shows it. */
export interface Proc {
  pid: number;
  ppid: number;
  pgid: number;
  state: string;
  /** Start time in clock ticks since boot: tells a process from a later one with its pid. */
  start: string;
  cmdline: string;
}

/** Every process now running on this host. */
export function processes(): Proc[] {
  const out: Proc[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").replace(/\0/g, " ");
      out.push({ pid: Number(entry), ppid: Number(fields[1]), pgid: Number(fields[2]), state: fields[0], start: fields[19], cmdline });
    } catch {
      // it ended while we looked
    }
  }
  return out;
}

/** Every process started by `pid`, its children's children included. */
export function descendants(pid: number): Proc[] {
  const all = processes();
  const found: Proc[] = [];
  const queue = [pid];
  while (queue.length) {
    const parent = queue.shift() as number;
    for (const p of all.filter((x) => x.ppid === parent)) {
      found.push(p);
      queue.push(p.pid);
    }
  }
  return found;
}

/** Those of `procs` still running (a zombie has ended; only its parent has not reaped it yet). */
export function stillRunning(procs: Proc[]): Proc[] {
  const now = processes();
  return procs.filter((p) => now.some((n) => n.pid === p.pid && n.start === p.start && n.state !== "Z"));
}
