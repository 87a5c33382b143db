import { readFileSync } from "node:fs";
import { hostname } from "node:os";

/**
 * Who holds something (a lease, an export, a writer lock): the host, its boot, the process and
 * when that process started. Pids are reused and hosts reboot, so a pid alone could make a dead
 * holder look alive; the start time (from /proc, in clock ticks since boot) and the boot id
 * tell a new process with an old pid from the one that took the lease.
 */
export interface ProcessIdentity {
  host: string;
  boot: string;
  pid: number;
  /** Field 22 of /proc/<pid>/stat; "" where /proc has no such field. */
  start: string;
}

function bootId(): string {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return "";
  }
}

/** The start time of a process, or undefined when it does not run. */
function startOf(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return fields[19] ?? "";
}

let self: ProcessIdentity | undefined;

export function thisProcess(): ProcessIdentity {
  // A forked child has another pid: never hand it its parent's identity.
  if (!self || self.pid !== process.pid) {
    self = { host: hostname(), boot: bootId(), pid: process.pid, start: startOf(process.pid) ?? "" };
  }
  return { ...self };
}

export function describeProcess(p: ProcessIdentity): string {
  return `${p.host}:${p.pid}`;
}

export function sameProcess(a: ProcessIdentity, b: ProcessIdentity): boolean {
  return a.host === b.host && a.boot === b.boot && a.pid === b.pid && a.start === b.start;
}

/**
 * "dead" when the holder was a process on this host that no longer runs (or ran before this
 * boot); "alive" when it still runs here; "elsewhere" for another host, where only a heartbeat
 * can tell.
 */
export function processState(p: ProcessIdentity): "alive" | "dead" | "elsewhere" {
  if (p.host !== hostname()) return "elsewhere";
  const me = thisProcess();
  if (p.boot && me.boot && p.boot !== me.boot) return "dead";
  if (!Number.isInteger(p.pid) || p.pid <= 0) return "dead";
  const start = startOf(p.pid);
  if (start === undefined) return "dead";
  if (p.start && start && p.start !== start) return "dead"; // the pid now belongs to another process
  return "alive";
}

/** Parses an identity kept as JSON, refusing anything of another shape. */
export function parseIdentity(value: unknown): ProcessIdentity | undefined {
  if (!value || typeof value !== "object") return undefined;
  const v = value as Record<string, unknown>;
  if (typeof v.host !== "string" || typeof v.pid !== "number") return undefined;
  return { host: v.host, boot: typeof v.boot === "string" ? v.boot : "", pid: v.pid, start: typeof v.start === "string" ? v.start : "" };
}
