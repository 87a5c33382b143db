import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { KINDLING, type CliResult } from "./cli";
import type { DatabaseKind, DatabaseServer } from "./databases";
import { isRoot } from "./env";

/** The python that sets a host name (and has libnbd's `nbd` module, for the NBD tests). */
export const PYTHON = "/usr/bin/python3";

/**
 * Runs as the first program in a fresh UTS namespace: gives it the host's name, then becomes
 * the command (exec, so the command keeps the pid the caller sees and can kill).
 */
const BECOME_HOST = "import os, socket, sys\nsocket.sethostname(sys.argv[1])\nos.execvp(sys.argv[2], sys.argv[2:])";

let missing: { why: string | undefined } | undefined;

/** Why hosts of their own cannot be made here, or undefined when they can. */
export function hostsMissing(): string | undefined {
  missing ??= { why: probeHosts() };
  return missing.why;
}

function probeHosts(): string | undefined {
  if (!isRoot) return "needs root: each host is a UTS namespace of its own (unshare --uts), for a host name of its own";
  if (!existsSync(PYTHON)) return `${PYTHON} is not installed (it names each host in its namespace)`;
  const probe = spawnSync("unshare", ["--uts", "--", PYTHON, "-c", BECOME_HOST, "kindling-probe", "true"], { encoding: "utf8" });
  if (probe.status !== 0) return `unshare --uts does not work here: ${probe.error?.message ?? probe.stderr}`;
  return undefined;
}

/** Skips a test, saying why, where hosts of their own cannot be made. */
export function needsHosts(t: TestContext): boolean {
  const why = hostsMissing();
  if (why) t.skip(why);
  return why !== undefined;
}

/**
 * The records store of a database server as a host's configuration names it: the password in
 * a file, as an operator would keep it, so it reaches no command line and no environment.
 */
export function serverPersistence(server: DatabaseServer): { storage: DatabaseKind; url: string; passwordFile: string } {
  return { storage: server.kind, url: server.url, passwordFile: join(server.dir, "password") };
}

/**
 * Another machine, as far as kindling can tell: every process of it runs in a UTS namespace
 * with the host's own name (so leases and writer locks it holds name that host, and the others
 * judge them by heartbeat, as they would a real remote host's), with its own runtime directory
 * (KINDLING_RUNTIME_DIR: where its Ceph key files go), home and temporary directory. What hosts share is
 * what the test gives them: a pool directory, a Ceph cluster, a database server.
 */
export class Host {
  readonly dir: string;
  readonly runtimeDir: string;

  constructor(readonly name: string, parent: string) {
    this.dir = join(parent, name);
    this.runtimeDir = join(this.dir, "runtime");
    for (const sub of ["runtime", "home", "tmp"]) mkdirSync(join(this.dir, sub), { recursive: true });
  }

  env(extra: Record<string, string> = {}): Record<string, string> {
    return {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: join(this.dir, "home"),
      XDG_DATA_HOME: join(this.dir, "home", ".local", "share"),
      TMPDIR: join(this.dir, "tmp"),
      KINDLING_RUNTIME_DIR: this.runtimeDir,
      KINDLING_LOG_LEVEL: "info",
      ...extra,
    };
  }

  /** A file of this host's own (a configuration, a plan), written owner-only: it may hold a key. */
  writeFile(name: string, content: string): string {
    const path = join(this.dir, name);
    writeFileSync(path, content, { mode: 0o600 });
    return path;
  }

  /** Starts `command` on this host; the child's pid is the command's own. */
  spawn(command: string, args: string[], opts: { env?: Record<string, string> } = {}): ChildProcess {
    return spawn("unshare", ["--uts", "--", PYTHON, "-c", BECOME_HOST, this.name, command, ...args], {
      env: this.env(opts.env),
      stdio: ["ignore", "pipe", "pipe"],
    });
  }

  /** bin/kindling on this host, to its end. */
  kindling(args: string[], env: Record<string, string> = {}): CliResult {
    const r = spawnSync("unshare", ["--uts", "--", PYTHON, "-c", BECOME_HOST, this.name, KINDLING, ...args], { env: this.env(env), encoding: "utf8" });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, json: () => JSON.parse(r.stdout) };
  }

  /** `kindling nbd serve` on this host, once it says it serves. */
  async serveNbd(config: string, port: number, env: Record<string, string> = {}): Promise<HostDaemon> {
    const child = this.spawn(KINDLING, ["--config", config, "nbd", "serve", "--listen", `127.0.0.1:${port}`], { env });
    let output = "";
    child.stdout?.on("data", (d) => (output += d));
    child.stderr?.on("data", (d) => (output += d));
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    for (let i = 0; i < 400 && !output.includes("serving NBD"); i++) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`nbd serve on ${this.name} exited: ${output}`);
      await sleep(50);
    }
    if (!output.includes("serving NBD")) throw new Error(`nbd serve on ${this.name} did not start: ${output}`);
    return new HostDaemon(this, child, port, () => output, exited);
  }
}

/** `kindling nbd serve` running on a host. */
export class HostDaemon {
  constructor(
    readonly host: Host,
    readonly child: ChildProcess,
    readonly port: number,
    readonly log: () => string,
    readonly exited: Promise<void>,
  ) {}

  get uri(): string {
    return `nbd://127.0.0.1:${this.port}`;
  }

  /** `host:pid`, as kindling names a holder in its messages. */
  get holder(): string {
    return `${this.host.name}:${this.child.pid}`;
  }

  /** pino lines of its log whose message matches. */
  logLines(msg: RegExp): Array<{ level: number; msg: string; holder?: string }> {
    return this.log().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)).filter((l) => msg.test(l.msg));
  }

  /** Stops it (SIGTERM drains; SIGKILL is a crash) and waits until it is gone. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    await this.exited;
  }
}

/** One library operation of a worker's plan (see host-worker.ts). */
export type Step =
  | { op: "create"; name: string; sizeGiB: number; extraSpecs?: Record<string, string> }
  | { op: "snapshot"; volume: string; name: string }
  | { op: "clone"; volume: string; name: string }
  | { op: "extend"; volume: string; sizeGiB: number }
  | { op: "delete-volume"; name: string }
  | { op: "delete-snapshot"; name: string };

/**
 * What a worker reports of one step: it succeeded (with the id it made and, for a volume, the
 * size it was made with), or the error's code.
 */
export type Outcome = Step & { ok: boolean; id?: string; bornGiB?: number; code?: string; message?: string };

/** A worker's plan: phases, each a list of step sequences run at once (Promise.all). */
export interface Plan {
  backend: Record<string, unknown>;
  leases?: Record<string, number>;
  /** Where the barrier files are: `ready-<host>`, `go-<phase>`, `done-<phase>-<host>.json`. */
  exchange: string;
  phases: Step[][][];
}

const WORKER = join(__dirname, "host-worker.js");

/** A library worker started on a host, following its plan. */
export interface Worker {
  host: Host;
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** Starts a library worker on `host` (its plan in a file of the host's: it may hold a key). */
export function startWorker(host: Host, plan: Plan): Worker {
  const file = host.writeFile(`plan-${Date.now()}-${Math.random().toString(16).slice(2)}.json`, JSON.stringify(plan));
  const child = host.spawn(process.execPath, [WORKER, file]);
  let output = "";
  child.stdout?.on("data", (d) => (output += d));
  child.stderr?.on("data", (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { host, child, output: () => output, exited };
}

/** Waits for a file `worker` writes; fails if the worker ends without writing it. */
async function waitForFile(path: string, worker: Worker): Promise<void> {
  while (!existsSync(path)) {
    const ended = worker.child.exitCode !== null || worker.child.signalCode !== null;
    if (ended && !existsSync(path)) throw new Error(`the worker on ${worker.host.name} ended (${worker.child.exitCode ?? worker.child.signalCode}) before ${path}: ${worker.output()}`);
    await sleep(5);
  }
}

/**
 * Runs one worker per host through the same phases: each phase starts on every host at once
 * (a barrier file, written when every worker has opened its backend and finished the phase
 * before), so their operations really meet. Resolves with the outcomes, [host][phase][step].
 */
export async function runPhases(exchange: string, plans: Array<{ host: Host; phases: Step[][][]; backend: Record<string, unknown>; leases?: Record<string, number> }>): Promise<Outcome[][][]> {
  mkdirSync(exchange, { recursive: true });
  const workers = plans.map((p) => startWorker(p.host, { backend: p.backend, leases: p.leases, exchange, phases: p.phases }));
  try {
    for (const w of workers) await waitForFile(join(exchange, `ready-${w.host.name}`), w);
    const phases = Math.max(...plans.map((p) => p.phases.length));
    const outcomes: Outcome[][][] = plans.map(() => []);
    for (let phase = 0; phase < phases; phase++) {
      writeFileSync(join(exchange, `go-${phase}`), "");
      for (const [i, w] of workers.entries()) {
        const done = join(exchange, `done-${phase}-${w.host.name}.json`);
        await waitForFile(done, w);
        outcomes[i].push(JSON.parse(readFileSync(done, "utf8")) as Outcome[]);
      }
    }
    for (const w of workers) {
      const code = await w.exited;
      if (code !== 0) throw new Error(`the worker on ${w.host.name} exited ${code}: ${w.output()}`);
    }
    return outcomes;
  } finally {
    for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill("SIGKILL");
  }
}
