// kindling's NBD server against nbdkit (file plugin), qemu-nbd and nbd-server, serving the same 1 GiB
// file of random data on 127.0.0.1: fio's nbd engine (1 MiB sequential read and write, 4 KiB
// random read and write, iodepth 16; one request at a time of 4 KiB and 1 KiB; 50 clients at
// once), nbdcopy both ways (its default connections, and one), and what an idle connection
// costs. kindling is served twice: by its native data path (the default) and by its JavaScript
// one (`kindling-js`, KINDLING_NBD_NATIVE=off). Servers alternate within each run; median of
// KINDLING_BENCH_RUNS (3). Ratios are to nbdkit.
//   KINDLING_BENCH_ROWS=seqread,randread-qd1,...|all  other rows (all: also 1 MiB at iodepth 1)
//   KINDLING_BENCH_SERVERS=kindling,nbdkit  (default all five; nbd-server comes from
//     scripts/nbd-server.sh, unpacked from Debian's package)
//   KINDLING_BENCH_PROFILE=DIR  where the time goes: a fresh server per row and server, kindling's
//     daemon under --cpu-prof with bench/nbd-probe.ts (allocations, GC, event-loop use); each
//     server's CPU time and peak RSS; a summary in DIR/summary.md. With KINDLING_BENCH_STRACE=1
//     the servers run under `strace -c -f` instead (syscalls per request; rates then mean little).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { cpus, loadavg, release, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { GiB, MiB } from "../provider/util/sizes";
import { freePort } from "../test/helpers/daemon";
import { tempDir } from "../test/helpers/env";
import { RawClient } from "../test/helpers/nbd-client";

const env = process.env;
const profileDir = env.KINDLING_BENCH_PROFILE ? resolve(env.KINDLING_BENCH_PROFILE) : undefined;
const strace = profileDir !== undefined && env.KINDLING_BENCH_STRACE === "1";
const runs = Number(env.KINDLING_BENCH_RUNS ?? (profileDir ? 1 : 3));
const seconds = Number(env.KINDLING_BENCH_SECONDS ?? 5);
const SERVERS = (env.KINDLING_BENCH_SERVERS ?? "kindling,kindling-js,nbdkit,qemu-nbd,nbd-server").split(",");
const ROOT = resolve(__dirname, "..", "..");
/** The median of the runs that finished (NaN when none did). */
const median = (xs: number[]) => {
  const done = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  return done.length ? done[Math.floor(done.length / 2)] : Number.NaN;
};

interface Server { name: string; uri: string; child: ChildProcess; pid: number; stop(): Promise<number> }

/** One row of the table: a fio job, or nbdcopy one way. */
interface Row {
  key: string;
  label: string;
  rw?: string;
  bs?: string;
  depth?: number;
  /** fio jobs, each its own connection. */
  jobs?: number;
  copy?: "read" | "write";
  /** nbdcopy's connections; its default (4 where the server allows MULTI_CONN) when unset. */
  connections?: number;
  /** The server's CPU with one connection open and idle. */
  idle?: boolean;
  /** Lower is better (the ratio reads the other way round). */
  lowerBetter?: boolean;
}
const ALL_ROWS: Row[] = [
  { key: "seqread", label: "seq read 1M (MiB/s)", rw: "read", bs: "1M", depth: 16 },
  { key: "seqwrite", label: "seq write 1M (MiB/s)", rw: "write", bs: "1M", depth: 16 },
  { key: "randread", label: "4k randread (IOPS)", rw: "randread", bs: "4k", depth: 16 },
  { key: "randwrite", label: "4k randwrite (IOPS)", rw: "randwrite", bs: "4k", depth: 16 },
  { key: "copyread", label: "nbdcopy read (MiB/s)", copy: "read" },
  { key: "copywrite", label: "nbdcopy write (MiB/s)", copy: "write" },
  { key: "copyread-1conn", label: "nbdcopy read, 1 connection (MiB/s)", copy: "read", connections: 1 },
  { key: "copywrite-1conn", label: "nbdcopy write, 1 connection (MiB/s)", copy: "write", connections: 1 },
  // One request at a time: latency, where every hop of a request shows.
  { key: "randread-qd1", label: "4k randread, iodepth 1 (IOPS)", rw: "randread", bs: "4k", depth: 1 },
  { key: "randwrite-qd1", label: "4k randwrite, iodepth 1 (IOPS)", rw: "randwrite", bs: "4k", depth: 1 },
  { key: "randread1k-qd1", label: "1k randread, iodepth 1 (IOPS)", rw: "randread", bs: "1k", depth: 1 },
  { key: "randwrite1k-qd1", label: "1k randwrite, iodepth 1 (IOPS)", rw: "randwrite", bs: "1k", depth: 1 },
  { key: "clients50", label: "50 clients, 4k randread, iodepth 2 each (IOPS, total)", rw: "randread", bs: "4k", depth: 2, jobs: 50 },
  { key: "idle", label: "one idle connection (server CPU, ms per s)", idle: true, lowerBetter: true },
  { key: "seqread-qd1", label: "seq read 1M, iodepth 1 (MiB/s)", rw: "read", bs: "1M", depth: 1 },
  { key: "seqwrite-qd1", label: "seq write 1M, iodepth 1 (MiB/s)", rw: "write", bs: "1M", depth: 1 },
];
const DEFAULT_ROWS = ALL_ROWS.length - 2;
const defaultRun = !env.KINDLING_BENCH_ROWS && !env.KINDLING_BENCH_SERVERS && !profileDir;
const ROWS = (() => {
  const wanted = env.KINDLING_BENCH_ROWS;
  if (!wanted) return ALL_ROWS.slice(0, DEFAULT_ROWS);
  if (wanted === "all") return ALL_ROWS;
  return wanted.split(",").map((key) => {
    const row = ALL_ROWS.find((r) => r.key === key);
    if (!row) throw new Error(`no row ${key}; rows: ${ALL_ROWS.map((r) => r.key).join(", ")}`);
    return row;
  });
})();

function sh(command: string, args: string[]): string {
  const r = spawnSync(command, args, { encoding: "utf8", maxBuffer: 64 * MiB });
  if (r.status !== 0) throw new Error(`${command} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

async function waitFor(uri: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (spawnSync("nbdinfo", ["--size", uri]).status === 0) return;
    await sleep(100);
  }
  throw new Error(`no server at ${uri}`);
}

/** A field of a process's /proc status, in kB. */
function statusKiB(pid: number, field: string): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
}

/** Peak resident memory of a process (kB). */
const peakRss = (pid: number) => statusKiB(pid, "VmHWM");

/**
 * Memory on a fresh server (MiB): idle, then the peak over one client at iodepth 16 (1 MiB reads,
 * then writes: the largest buffers), the anonymous part after it, then the peak after 50 clients.
 */
async function memory(name: string, dir: string, file: string): Promise<number[]> {
  const server = await start(name, dir, file);
  await sleep(1000);
  const idle = peakRss(server.pid);
  for (const rw of ["read", "write"]) fio(server.uri, rw, "1M", 16);
  // nbd-server serves each client in a child of its own; its parent's memory says nothing.
  const one = peakRss(server.pid);
  const anon = statusKiB(server.pid, "RssAnon");
  fio(server.uri, "randread", "4k", 2, 50);
  const fifty = await server.stop();
  return [idle, one, anon, fifty].map((kB) => kB / 1024);
}

const MEMORY_ROWS = [
  "memory: peak RSS, idle (MiB)",
  "memory: peak RSS, one client at iodepth 16 (MiB)",
  "memory: anonymous (private) part after it (MiB)",
  "memory: peak RSS after 50 clients (MiB)",
];

/** How a profiled server runs: kindling's daemon under --cpu-prof and the probe, or any server under strace. */
interface Probe { cpuProfDir?: string; probeOut?: string; straceOut?: string }

async function start(name: string, dir: string, file: string, probe: Probe = {}): Promise<Server> {
  const port = await freePort();
  let uri = `nbd://127.0.0.1:${port}`;
  let argv: string[];
  const childEnv: NodeJS.ProcessEnv = { ...env };
  if (name === "kindling" || name === "kindling-js") {
    if (name === "kindling-js") childEnv.KINDLING_NBD_NATIVE = "off";
    const config = join(dir, "kindling.json");
    argv = [join(ROOT, "bin", "kindling"), "--config", config, "nbd", "serve", "--listen", `127.0.0.1:${port}`];
    uri += "/bench";
    if (probe.cpuProfDir) {
      childEnv.NODE_OPTIONS = `--cpu-prof --cpu-prof-dir=${probe.cpuProfDir} --require ${join(__dirname, "nbd-probe.js")}`;
      childEnv.KINDLING_BENCH_PROBE_OUT = probe.probeOut;
    }
  } else if (name === "nbdkit") {
    argv = ["nbdkit", "-f", "-i", "127.0.0.1", "-p", String(port), "file", file];
  } else if (name === "nbd-server") {
    return startNbdServer(dir, file, port);
  } else {
    argv = ["qemu-nbd", "-f", "raw", "--persistent", "--cache=writeback", "--aio=threads", "-e", "64", "-b", "127.0.0.1", "-p", String(port), file];
  }
  if (probe.straceOut) argv = ["strace", "-c", "-f", "-o", probe.straceOut, "--", ...argv];
  const child = spawn(argv[0], argv.slice(1), { stdio: "ignore", env: childEnv });
  await waitFor(uri);
  // Under strace the server is strace's child (bin/kindling execs node, so it keeps its PID).
  const pid = probe.straceOut ? Number(readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, "utf8").trim().split(/\s+/)[0]) : (child.pid as number);
  return {
    name,
    uri,
    child,
    pid,
    stop: () => stopServer(pid, () => new Promise((r) => child.once("exit", r))),
  };
}

/** SIGTERM, then waits until it is gone; its peak RSS (kB), read while it still ran. */
async function stopServer(pid: number, gone: () => Promise<unknown>): Promise<number> {
  const rss = peakRss(pid);
  const exited = gone();
  process.kill(pid, "SIGTERM");
  await exited;
  return rss;
}

/**
 * nbd-server forks: the parent accepts, and a child per client serves it. The parent's PID is
 * from its pidfile; CPU and peak RSS are the parent's only (a child's are gone with the client).
 */
async function startNbdServer(dir: string, file: string, port: number): Promise<Server> {
  const binary = sh(join(ROOT, "scripts", "nbd-server.sh"), []).trim();
  const config = join(dir, `nbd-server-${port}.conf`);
  const pidfile = join(dir, `nbd-server-${port}.pid`);
  writeFileSync(config, `[generic]\n  listenaddr = 127.0.0.1\n  port = ${port}\n  allowlist = true\n[bench]\n  exportname = ${file}\n`);
  const child = spawn(binary, ["-C", config, "-p", pidfile], { stdio: "ignore" });
  await new Promise((r) => child.once("exit", r));
  const uri = `nbd://127.0.0.1:${port}/bench`;
  await waitFor(uri);
  const pid = Number(readFileSync(pidfile, "utf8").trim());
  return {
    name: "nbd-server",
    uri,
    child,
    pid,
    // Not our child (it forked away): polled until gone, for at most 5 s.
    stop: () => stopServer(pid, async () => {
      for (let i = 0; i < 100 && existsSync(`/proc/${pid}`); i++) await sleep(50);
    }),
  };
}

interface Measured { rate: number; requests: number; seconds: number; latencyUs?: number }

function fio(uri: string, rw: string, bs: string, depth = 16, jobs = 1): Measured {
  // A server that never answers some clients would hold fio forever (nbd-server with 50 of
  // them did): past its runtime and a minute, the row is reported as not finished.
  const r = spawnSync("fio", [
    "--name=b", "--ioengine=nbd", `--uri=${uri}`, `--rw=${rw}`, `--bs=${bs}`, `--iodepth=${depth}`, "--size=1G",
    `--runtime=${seconds}`, "--time_based", "--output-format=json",
    ...(jobs > 1 ? [`--numjobs=${jobs}`, "--group_reporting"] : []),
  ], { encoding: "utf8", maxBuffer: 64 * MiB, timeout: (seconds + 60) * 1000, killSignal: "SIGKILL" });
  if (r.error || r.status !== 0) {
    if ((r.error as NodeJS.ErrnoException | undefined)?.code === "ETIMEDOUT" || r.signal === "SIGKILL") {
      // fio's jobs are processes in sessions of their own: killing fio leaves them behind.
      spawnSync("pkill", ["-KILL", "-f", `ioengine=nbd --uri=${uri} `]);
      return { rate: Number.NaN, requests: 0, seconds };
    }
    throw new Error(`fio: ${r.stderr}`);
  }
  const out = r.stdout;
  const job = JSON.parse(out.slice(out.indexOf("{"))).jobs[0];
  const side = rw.includes("read") ? job.read : job.write;
  return {
    rate: bs.endsWith("k") ? side.iops : side.bw / 1024, // IOPS, or MiB/s
    requests: side.total_ios,
    seconds: side.runtime / 1000,
    latencyUs: side.lat_ns.mean / 1000,
  };
}

async function runRow(row: Row, server: Server, source: string): Promise<Measured> {
  // Every row starts with nothing left to write back: an earlier row's dirty pages (kindling
  // flushes a client's writes after it disconnects, the others leave them to the kernel) would
  // otherwise be written out during this one.
  sh("sync", []);
  if (row.idle) return idleCost(server);
  const connections = row.connections ? [`--connections=${row.connections}`] : [];
  if (row.copy === "read") return nbdcopy(server.uri, "null:", GiB, connections);
  if (row.copy === "write") return nbdcopy(source, server.uri, 256 * MiB, connections);
  return fio(server.uri, row.rw as string, row.bs as string, row.depth, row.jobs);
}

/** The server's CPU (ms per second) while one client holds a connection open and sends nothing. */
async function idleCost(server: Server): Promise<Measured> {
  const url = new URL(server.uri);
  const client = await RawClient.connect(Number(url.port));
  await client.go(decodeURIComponent(url.pathname.slice(1)), { structured: true }); // in transmission, then silent
  await sleep(500);
  const before = cpuNs(server.pid);
  await sleep(seconds * 1000);
  const used = (cpuNs(server.pid) - before) / 1e6;
  client.close();
  return { rate: used / seconds, requests: 0, seconds };
}

/** CPU time of all a process's threads so far (ns, from schedstat: finer than /proc's ticks). */
function cpuNs(pid: number): number {
  let ns = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // the thread ended while we looked
    }
  }
  return ns;
}

function nbdcopy(from: string, to: string, bytes: number, args: string[] = []): Measured {
  const start = process.hrtime.bigint();
  sh("nbdcopy", [...args, from, to]);
  const s = Number(process.hrtime.bigint() - start) / 1e9;
  // nbdcopy's requests are 256 KiB (its default) at most; a count is not reported.
  return { rate: bytes / MiB / s, requests: Math.ceil(bytes / (256 * 1024)), seconds: s };
}

/** User plus system CPU time of a process and all its threads so far (ms), from /proc. */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime, stime in ticks of 1/100 s
}

interface CpuProfileNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
interface CpuProfile { nodes: CpuProfileNode[]; startTime: number; samples: number[]; timeDeltas: number[] }

/**
 * The stage a stack belongs to, from its innermost frame that names one: receiving and parsing
 * requests, handling them (the server's per-request code and promises), the device (fs calls
 * and their completions), sending replies. What names none is other JavaScript, or V8's
 * "(program)" (native code outside JavaScript: libuv, the socket calls), GC or idle.
 */
function stageOf(frame: CpuProfileNode["callFrame"]): string | undefined {
  const { functionName: f, url } = frame;
  if (f === "(idle)") return "idle";
  if (f === "(garbage collector)") return "gc";
  if (f === "(program)") return "native";
  if (url.endsWith("util/nbd/reader.js")) return "receive";
  if (url.endsWith("nbd/transmission.js")) {
    if (f === "run") return "receive";
    if (["send", "chunkHeader", "simpleHeader", "replyOk", "replyError"].includes(f)) return "send";
    return "handle";
  }
  if (url.endsWith("file/blockdevice.js") || url === "node:fs") return "device";
  if (f === "onStreamRead" || url.includes("streams/readable")) return "receive";
  if (url.includes("streams/writable") || url.includes("stream_base_commons") || url === "node:net") return "send";
  return undefined;
}
const STAGES = ["receive", "handle", "device", "send", "other", "native", "gc", "idle"];

/** Self time by stage and the hottest functions (self and inclusive, ms) within [from, to] (µs, CLOCK_MONOTONIC). */
function analyse(profile: CpuProfile, from: number, to: number) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const stageCache = new Map<number, string>();
  const stageOfNode = (id: number): string => {
    let s = stageCache.get(id);
    if (s) return s;
    for (let at: number | undefined = id; at !== undefined && !s; at = parent.get(at)) s = stageOf((byId.get(at) as CpuProfileNode).callFrame);
    stageCache.set(id, (s ??= "other"));
    return s;
  };
  const key = (n: CpuProfileNode) => `${n.callFrame.functionName || "(anonymous)"} ${n.callFrame.url.replace(/^.*\/dist\//, "")}:${n.callFrame.lineNumber + 1}`;
  const stages: Record<string, number> = Object.fromEntries(STAGES.map((s) => [s, 0]));
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let t = profile.startTime;
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i];
    if (t < from || t > to) continue;
    // A sample's time is the gap to the next one.
    const dt = (profile.timeDeltas[i + 1] ?? 0) / 1000;
    const id = profile.samples[i];
    const node = byId.get(id) as CpuProfileNode;
    stages[stageOfNode(id)] += dt;
    total += dt;
    self.set(key(node), (self.get(key(node)) ?? 0) + dt);
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const k = key(byId.get(at) as CpuProfileNode);
      if (seen.has(k)) continue;
      seen.add(k);
      inclusive.set(k, (inclusive.get(k) ?? 0) + dt);
    }
  }
  const hot = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([k, ms]) => ({ fn: k, selfMs: ms, inclusiveMs: inclusive.get(k) ?? 0 }));
  const hotInclusive = [...inclusive.entries()].filter(([k]) => !k.startsWith("(root)")).sort((a, b) => b[1] - a[1]).slice(0, 12).map(([k, ms]) => ({ fn: k, inclusiveMs: ms, selfMs: self.get(k) ?? 0 }));
  return { totalMs: total, stages, hot, hotInclusive };
}

/** `strace -c` output: calls per syscall, and the system time each call took (µs, inflated by tracing). */
function straceCounts(file: string): Record<string, { calls: number; usPerCall: number }> {
  const counts: Record<string, { calls: number; usPerCall: number }> = {};
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const m = /^\s*[\d.]+\s+[\d.]+\s+(\d+)\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$/.exec(line);
    if (m && m[3] !== "total") counts[m[3]] = { calls: Number(m[2]), usPerCall: Number(m[1]) };
  }
  return counts;
}

/** Where the time goes: each row on a fresh server of each kind, measured from the inside. */
async function profile(dir: string, file: string, source: string): Promise<void> {
  const out = profileDir as string;
  mkdirSync(out, { recursive: true });
  const report: string[] = [
    `Machine: ${cpus().length} cores, ${Math.round(totalmem() / GiB)} GiB, Linux ${release()}; ${new Date().toISOString()}; fio runs of ${seconds} s; ${strace ? "under strace -c -f" : "kindling under --cpu-prof"}.`,
    "",
  ];
  const all: unknown[] = [];
  for (let run = 0; run < runs; run++) {
    for (const row of ROWS) {
      for (const name of SERVERS) {
        const tag = `${row.key}-${name}-run${run + 1}`;
        const probe: Probe = strace
          ? { straceOut: join(out, `${tag}.strace`) }
          : name === "kindling" ? { cpuProfDir: join(out, tag), probeOut: join(out, `${tag}.probe.json`) } : {};
        const server = await start(name, dir, file, probe);
        const load = loadavg()[0];
        const probing = probe.probeOut !== undefined;
        if (probing) process.kill(server.pid, "SIGUSR2");
        const cpu0 = cpuMs(server.pid);
        const from = Number(process.hrtime.bigint() / 1000n);
        const m = await runRow(row, server, source);
        const to = Number(process.hrtime.bigint() / 1000n);
        const cpu = cpuMs(server.pid) - cpu0;
        if (probing) {
          process.kill(server.pid, "SIGUSR2");
          for (let i = 0; i < 50 && !existsSync(probe.probeOut as string); i++) await sleep(100);
        }
        const rssKiB = await server.stop();
        const perReq = (x: number) => (x * 1000) / m.requests; // ms → µs per request
        // Per request over fio's own runtime (the window also holds fio's start and connect).
        const entry: Record<string, unknown> = { row: row.key, server: name, run: run + 1, load, ...m, usPerRequest: perReq(m.seconds * 1000), cpuUsPerRequest: perReq(cpu), peakRssMiB: rssKiB / 1024 };
        if (probe.straceOut) {
          const counts = straceCounts(probe.straceOut);
          const total = Object.values(counts).reduce((a, b) => a + b.calls, 0);
          entry.syscallsPerRequest = total / m.requests;
          entry.syscalls = Object.fromEntries(Object.entries(counts).sort((a, b) => b[1].calls - a[1].calls).slice(0, 8).map(([k, v]) => [k, { perRequest: Number((v.calls / m.requests).toFixed(3)), usPerCall: v.usPerCall }]));
        }
        if (probe.cpuProfDir) {
          const [prof] = readdirSync(probe.cpuProfDir).filter((f) => f.endsWith(".cpuprofile"));
          const a = analyse(JSON.parse(readFileSync(join(probe.cpuProfDir, prof), "utf8")) as CpuProfile, from, to);
          // The daemon sat idle while fio started and connected: that is not the requests' idle time.
          a.stages.idle = Math.max(0, a.stages.idle - (a.totalMs - m.seconds * 1000));
          a.totalMs = m.seconds * 1000;
          entry.profiledMs = a.totalMs;
          entry.stageUsPerRequest = Object.fromEntries(Object.entries(a.stages).map(([k, v]) => [k, Number(perReq(v).toFixed(2))]));
          entry.stageShare = Object.fromEntries(Object.entries(a.stages).map(([k, v]) => [k, Number((v / a.totalMs).toFixed(3))]));
          entry.hotSelf = a.hot;
          entry.hotInclusive = a.hotInclusive;
          const p = JSON.parse(readFileSync(probe.probeOut as string, "utf8"));
          const calls = Object.values(p.buffers as Record<string, { calls: number; bytes: number }>).reduce((acc, b) => ({ calls: acc.calls + b.calls, bytes: acc.bytes + b.bytes }), { calls: 0, bytes: 0 });
          entry.buffersPerRequest = { calls: calls.calls / m.requests, bytes: calls.bytes / m.requests, by: p.buffers };
          entry.gc = p.gc;
          entry.eventLoop = p.eventLoop;
          entry.delayMs = p.delayMs;
          entry.mainThreadCpu = { userMs: p.cpuUserMs, systemMs: p.cpuSystemMs };
        }
        all.push(entry);
        console.error(JSON.stringify({ ...entry, hotSelf: undefined, hotInclusive: undefined }));
        writeFileSync(join(out, "results.json"), JSON.stringify(all, null, 1));
      }
    }
  }
  const rows = all as Array<Record<string, any>>;
  report.push(
    "| row | server | load | rate | requests | µs/request | mean latency µs | server CPU µs/request | peak RSS MiB |" + (strace ? " syscalls/request | top syscalls: per request (µs per call) |" : " receive | handle | device | send | other JS | native | GC | idle (µs/request) | Buffers/request (calls, bytes) | GCs |"),
    "|---|---|---|---|---|---|---|---|---|" + (strace ? "---|---|" : "---|---|---|---|---|---|---|---|---|---|"),
    ...rows.map((e) => {
      const base = `| ${e.row} | ${e.server} | ${e.load.toFixed(1)} | ${e.rate.toFixed(0)} | ${e.requests} | ${e.usPerRequest.toFixed(1)} | ${e.latencyUs?.toFixed(1) ?? "-"} | ${e.cpuUsPerRequest.toFixed(1)} | ${e.peakRssMiB.toFixed(0)} |`;
      if (strace) return `${base} ${e.syscallsPerRequest.toFixed(2)} | ${Object.entries(e.syscalls as Record<string, { perRequest: number; usPerCall: number }>).map(([k, v]) => `${k} ${v.perRequest} (${v.usPerCall} µs)`).join(", ")} |`;
      if (!e.stageUsPerRequest) return `${base}${" - |".repeat(10)}`;
      const st = STAGES.map((k) => e.stageUsPerRequest[k].toFixed(1)).join(" | ");
      const gcs = Object.entries(e.gc as Record<string, { count: number; ms: number }>).map(([k, v]) => `${k} ${v.count} (${v.ms.toFixed(0)} ms)`).join(", ");
      return `${base} ${st} | ${e.buffersPerRequest.calls.toFixed(2)}, ${e.buffersPerRequest.bytes.toFixed(0)} | ${gcs} |`;
    }),
  );
  if (!strace) {
    for (const e of rows.filter((x) => x.hotSelf)) {
      report.push("", `${e.row}, run ${e.run}: hottest functions (ms of ${e.profiledMs.toFixed(0)} profiled; event-loop utilisation ${e.eventLoop.utilisation.toFixed(2)})`, "");
      report.push("| function | self ms | inclusive ms |", "|---|---|---|", ...e.hotSelf.map((h: any) => `| ${h.fn} | ${h.selfMs.toFixed(0)} | ${h.inclusiveMs.toFixed(0)} |`));
      report.push("", "| function (by inclusive) | inclusive ms | self ms |", "|---|---|---|", ...e.hotInclusive.map((h: any) => `| ${h.fn} | ${h.inclusiveMs.toFixed(0)} | ${h.selfMs.toFixed(0)} |`));
    }
  }
  writeFileSync(join(out, "summary.md"), `${report.join("\n")}\n`);
  console.log(report.join("\n"));
}

async function main(): Promise<void> {
  const dir = tempDir("kindling-nbd-bench-");
  try {
    // A kindling volume, filled with random data: all three servers serve this same file.
    const config = join(dir, "kindling.json");
    writeFileSync(config, JSON.stringify({ backends: { b: { driver: "file", path: join(dir, "volumes") } } }));
    const kindling = (...args: string[]) => JSON.parse(sh(join(ROOT, "bin", "kindling"), ["--config", config, "--json", ...args]));
    const volume = kindling("volume", "create", "bench", "--size", "1");
    kindling("connect", "bench", "--protocol", "nbd");
    const fd = openSync(volume.location, "r+");
    for (let at = 0; at < GiB; at += 16 * MiB) writeSync(fd, randomBytes(16 * MiB), 0, 16 * MiB, at);
    closeSync(fd);
    const source = join(dir, "source.img");
    writeFileSync(source, randomBytes(256 * MiB));

    if (profileDir) return await profile(dir, volume.location, source);
    const results: Record<string, Record<string, number[]>> = {};
    const loads: Record<string, number[]> = {};
    const rss: Record<string, number[]> = {};
    for (let run = 0; run < runs; run++) {
      for (const name of SERVERS) {
        const server = await start(name, dir, volume.location);
        const r = (results[name] ??= Object.fromEntries(ROWS.map((t) => [t.label, []])));
        for (const row of ROWS) {
          (loads[row.label] ??= []).push(loadavg()[0]);
          r[row.label].push((await runRow(row, server, source)).rate);
        }
        (rss[name] ??= []).push(await server.stop());
      }
    }
    const mem: Record<string, number[][]> = {};
    if (!env.KINDLING_BENCH_ROWS) {
      for (let run = 0; run < runs; run++) for (const name of SERVERS) (mem[name] ??= []).push(await memory(name, dir, volume.location));
    }
    const label = (s: string) => (s === "nbdkit" ? "nbdkit file" : s === "kindling-js" ? "kindling, JavaScript path" : s);
    const ratio = SERVERS.includes("kindling") && SERVERS.includes("nbdkit");
    const lines = [
      `Machine: ${cpus().length} cores, ${Math.round(totalmem() / GiB)} GiB, Linux ${release()}; ${new Date().toISOString().slice(0, 10)}; median of ${runs}; fio runs of ${seconds} s${defaultRun ? ", iodepth 16" : ""}.`,
      "",
      `| test | ${SERVERS.map(label).join(" | ")} |${ratio ? " kindling / nbdkit |" : ""}${defaultRun ? "" : " load (1 min) |"}`,
      `|---|${SERVERS.map(() => "---|").join("")}${ratio ? "---|" : ""}${defaultRun ? "" : "---|"}`,
      ...ROWS.map(({ label: t }) => {
        const m = SERVERS.map((s) => median(results[s][t]));
        const k = m[SERVERS.indexOf("kindling")];
        const n = m[SERVERS.indexOf("nbdkit")];
        const load = loads[t].map((l) => l.toFixed(1)).join(", ");
        const lowerBetter = ROWS.find((r) => r.label === t)?.lowerBetter;
        const shown = m.map((x) => (Number.isNaN(x) ? "did not finish" : lowerBetter ? x.toFixed(1) : x.toFixed(0))).join(" | ");
        // For a cost, the ratio is nbdkit's over kindling's: above 1 is better for kindling either way.
        const r = lowerBetter ? (k > 0 && n > 0 ? (n / k).toFixed(2) : "-") : (k / n).toFixed(2);
        return `| ${t} | ${shown} |${ratio ? ` ${r} |` : ""}${defaultRun ? "" : ` ${load} |`}`;
      }),
      `| peak RSS over all the rows above (MiB) | ${SERVERS.map((s) => (median(rss[s]) / 1024).toFixed(0)).join(" | ")} |${ratio ? " |" : ""}${defaultRun ? "" : " |"}`,
      ...(mem[SERVERS[0]] ? MEMORY_ROWS.map((label, i) =>
        `| ${label} | ${SERVERS.map((s) => median(mem[s].map((m) => m[i])).toFixed(0)).join(" | ")} |${ratio ? " |" : ""}${defaultRun ? "" : " |"}`) : []),
    ];
    const table = lines.join("\n");
    console.log(table);
    mkdirSync(join(ROOT, "bench", "results"), { recursive: true });
    writeFileSync(join(ROOT, "bench", "results", defaultRun ? "nbd.md" : "nbd-rows.md"), `${table}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
