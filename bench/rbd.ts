// The rbd driver on a throwaway single-node Ceph cluster (scripts/ceph/up.sh), three parts:
//  1. snapshot, clone and volume-from-snapshot time for images full of data (1 and 8 GiB):
//     copy-on-write, so time should not grow with size; the peer is the bare `rbd` commands
//     that do the same (snap create; snap create + protect + clone; protect + clone);
//  2. create and delete latency through the library against bare `rbd create` / `rbd rm` with
//     the same user, key file and timeouts, with the time kindling spends inside rbd/ceph
//     commands counted, so what it adds is visible;
//  3. `kindling nbd serve` exporting an RBD volume, on its native path (librbd in its own threads)
//     and on the path through its private qemu-nbd (librbd made unloadable), against `qemu-nbd`
//     serving the same image through librbd directly; fio's nbd engine; the CPU each server's
//     processes and the OSD used during each run.
// The servers take turns within each run; medians.
//   KINDLING_BENCH_SIZES=1,8 (GiB)  KINDLING_BENCH_RUNS=3 (fio)  KINDLING_BENCH_OP_RUNS=7
//   KINDLING_BENCH_SECONDS=5 (fio)  KINDLING_BENCH_DIR=/var/tmp (cluster data: up to ~12 GiB)
//   KINDLING_BENCH_PARTS=latency,cow,nbd   KINDLING_BENCH_LOG=debug (the NBD daemon's log level)
import { execFile, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { Backend, type Snapshot, type Volume } from "../provider/library";
import { MemoryPersistence } from "../provider/persistence/memory";
import { SqlitePersistence } from "../provider/persistence/sqlite";
import { CephAccess, monHostSetting } from "../provider/drivers/rbd/ceph";
import { GiB, MiB } from "../provider/util/sizes";
import { Daemon, freePort } from "../test/helpers/daemon";

const sizes = (process.env.KINDLING_BENCH_SIZES ?? "1,8").split(",").map(Number);
const runs = Number(process.env.KINDLING_BENCH_RUNS ?? 3);
/** Runs of the short operations (snapshot, clone, create, delete: 40-300 ms, noisy). */
const opRuns = Number(process.env.KINDLING_BENCH_OP_RUNS ?? 7);
const seconds = Number(process.env.KINDLING_BENCH_SECONDS ?? 5);
const base = process.env.KINDLING_BENCH_DIR ?? "/var/tmp";
const parts = new Set((process.env.KINDLING_BENCH_PARTS ?? "latency,cow,nbd").split(","));
const ROOT = resolve(__dirname, "..", "..");
const POOL = "volumes";
/** kindling's default timeoutSeconds; the peer gets the same limits. */
const TIMEOUT = "30";

const execFileP = promisify(execFile);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function sh(command: string, args: string[]): Promise<string> {
  const { stdout } = await execFileP(command, args, { maxBuffer: 64 * MiB });
  return stdout;
}

async function timed(work: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

// ---- the cluster

interface Cluster {
  dir: string;
  /** The cluster's own conf: client.admin through its keyring (filling images, checks). */
  adminConf: string;
  monHost: string;
  keyring: string;
}

/** Starts up.sh in `dir`; the caller stops it with stopCluster(dir) whatever happens. */
async function startCluster(dir: string, osdGiB: number): Promise<Cluster> {
  const port = await freePort();
  const v2 = await freePort();
  const r = spawnSync(join(ROOT, "scripts", "ceph", "up.sh"), [dir, POOL], {
    env: { ...process.env, CEPH_MON_PORT: String(port), CEPH_MON_V2_PORT: String(v2), CEPH_OSD_SIZE_GIB: String(osdGiB) },
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`ceph up.sh failed (${r.status}): ${r.stdout}\n${r.stderr}`);
  return { dir, adminConf: join(dir, "ceph.conf"), monHost: `127.0.0.1:${port}`, keyring: join(dir, "kindling.keyring") };
}

function stopCluster(dir: string): void {
  spawnSync(join(ROOT, "scripts", "ceph", "down.sh"), [dir], { stdio: "inherit" });
}

const admin = (cluster: Cluster, args: string[]) => sh("rbd", ["--conf", cluster.adminConf, ...args]);

/** Fills an image end to end with rbd's own writer (4 MiB sequential), and checks it is full. */
async function fill(cluster: Cluster, image: string, sizeGiB: number): Promise<number> {
  const took = await timed(() => admin(cluster, ["bench", "--io-type", "write", "--io-size", "4M", "--io-total", `${sizeGiB}G`, "--io-pattern", "seq", image]));
  const du = JSON.parse(await admin(cluster, ["du", image, "--format", "json"])) as { images: Array<{ used_size: number; provisioned_size: number }> };
  const { used_size: used, provisioned_size: provisioned } = du.images[du.images.length - 1];
  if (used < provisioned * 0.99) throw new Error(`${image}: rbd bench left it ${used} of ${provisioned} bytes full`);
  return (sizeGiB * 1024) / took;
}

// ---- the peer: bare rbd with kindling's user, key file and time limits

class BareRbd {
  readonly args: string[];
  readonly conf: string;
  constructor(dir: string, cluster: Cluster, readonly keyFile: string) {
    // The same minimal conf kindling writes for a monHost backend, so both read the cluster alike.
    const conf = join(dir, "peer-ceph.conf");
    writeFileSync(conf, `[global]\nmon host = ${monHostSetting(cluster.monHost)}\n`, { mode: 0o600 });
    this.args = ["--conf", conf, "--id", "kindling", "--keyfile", keyFile,
      "--client-mount-timeout", TIMEOUT, "--rados-mon-op-timeout", TIMEOUT, "--rados-osd-op-timeout", TIMEOUT];
    this.conf = conf;
  }

  run(...args: string[]): Promise<string> {
    return sh("rbd", [...this.args, ...args]);
  }
}

// ---- counting what kindling runs

/** Every rbd/ceph command kindling's rbd driver ran in this process, and the time spent in them. */
const ran = { commands: 0, seconds: 0 };

/**
 * Wraps CephAccess's one command runner (private, so through a cast) to count commands and
 * their wall time, for every backend including ones opened later: the rest of an operation's
 * time is kindling's own (validation, locks, persistence). Bench-only instrumentation; the
 * commands themselves are unchanged. Operations run one at a time, so deltas are per operation.
 */
function countCommands(): void {
  type Tool = (this: CephAccess, command: string, args: string[], what: string) => Promise<unknown>;
  const proto = CephAccess.prototype as unknown as { tool: Tool };
  const original = proto.tool;
  proto.tool = async function (this: CephAccess, command, args, what) {
    const start = process.hrtime.bigint();
    try {
      return await original.call(this, command, args, what);
    } finally {
      ran.commands++;
      ran.seconds += Number(process.hrtime.bigint() - start) / 1e9;
    }
  };
}

interface Tallied { total: number; commands: number; inCommands: number }

async function tallied(work: () => Promise<unknown>): Promise<Tallied> {
  const before = { ...ran };
  const total = await timed(work);
  return { total, commands: ran.commands - before.commands, inCommands: ran.seconds - before.seconds };
}

// ---- 1. snapshot and clone against size

interface CowRow { sizeGiB: number; fillMiBs: number; k: Record<string, number>; peer: Record<string, number>; commands: Record<string, number> }
const COW_OPS = ["snapshot", "clone", "volume from snapshot"] as const;
/** The bare rbd commands each operation takes (see the peer below). */
const PEER_COMMANDS: Record<string, number> = { snapshot: 1, clone: 3, "volume from snapshot": 2 };

async function copyOnWrite(cluster: Cluster, backend: Backend, peer: BareRbd, sizeGiB: number): Promise<CowRow> {
  const volume = await backend.createVolume({ name: `cow-${sizeGiB}`, sizeGiB });
  const image = volume.location as string;
  try {
    const fillMiBs = await fill(cluster, image, sizeGiB);
    const k: Record<string, number[]> = Object.fromEntries(COW_OPS.map((o) => [o, []]));
    const p: Record<string, number[]> = Object.fromEntries(COW_OPS.map((o) => [o, []]));
    const n: Record<string, number[]> = Object.fromEntries(COW_OPS.map((o) => [o, []]));
    const mine = async (op: string, work: () => Promise<unknown>) => {
      const t = await tallied(work);
      k[op].push(t.total);
      n[op].push(t.commands);
    };
    // The peer: what the same result takes with rbd alone, on the same image.
    const bare = async (i: number) => {
      p.snapshot.push(await timed(() => peer.run("snap", "create", `${image}@peer-${i}`, "--no-progress")));
      p["volume from snapshot"].push(await timed(async () => {
        await peer.run("snap", "protect", `${image}@peer-${i}`);
        await peer.run("clone", `${image}@peer-${i}`, `${POOL}/peer-fromsnap-${i}`);
      }));
      await peer.run("rm", `${POOL}/peer-fromsnap-${i}`, "--no-progress");
      await peer.run("snap", "unprotect", `${image}@peer-${i}`);
      await peer.run("snap", "rm", `${image}@peer-${i}`, "--no-progress");
      p.clone.push(await timed(async () => {
        await peer.run("snap", "create", `${image}@peer-clone-${i}`, "--no-progress");
        await peer.run("snap", "protect", `${image}@peer-clone-${i}`);
        await peer.run("clone", `${image}@peer-clone-${i}`, `${POOL}/peer-clone-${i}`);
      }));
      await peer.run("rm", `${POOL}/peer-clone-${i}`, "--no-progress");
      await peer.run("snap", "unprotect", `${image}@peer-clone-${i}`);
      await peer.run("snap", "rm", `${image}@peer-clone-${i}`, "--no-progress");
    };
    const ours = async () => {
      let snapshot!: Snapshot;
      await mine("snapshot", async () => (snapshot = await volume.createSnapshot()));
      let fromSnap!: Volume;
      await mine("volume from snapshot", async () => (fromSnap = await snapshot.createVolume()));
      await fromSnap.delete();
      await snapshot.delete();
      let clone!: Volume;
      await mine("clone", async () => (clone = await volume.clone()));
      await clone.delete();
    };
    for (let i = 0; i < opRuns; i++) {
      if (i % 2 === 0) {
        await bare(i);
        await ours();
      } else {
        await ours();
        await bare(i);
      }
    }
    const med = (m: Record<string, number[]>) => Object.fromEntries(Object.entries(m).map(([op, xs]) => [op, median(xs)]));
    return { sizeGiB, fillMiBs, k: med(k), peer: med(p), commands: med(n) };
  } finally {
    await volume.delete();
  }
}

// ---- 2. create and delete latency

interface Latency { op: string; peer: number; sqlite: number; memory: number; commands: number; inCommands: number; own: number }

type BackendConfig = Parameters<typeof Backend.open>[0];

async function latency(config: BackendConfig, sqlite: Backend, memory: Backend, peer: BareRbd, dbPath: string): Promise<Latency[]> {
  const series = () => ({ peer: [] as number[], sqlite: [] as number[], memory: [] as number[], commands: [] as number[], inCommands: [] as number[], own: [] as number[] });
  const create = series(), remove = series(), cold = series();
  const record = (into: ReturnType<typeof series>, t: Tallied) => {
    into.sqlite.push(t.total);
    into.commands.push(t.commands);
    into.inCommands.push(t.inCommands);
    into.own.push(t.total - t.inCommands);
  };
  // Warm-up, untimed: the first create of a backend runs `ceph df` (capacity, cached 30 s),
  // and each kind of process pays its first exec once; the steady state is measured below,
  // and the first create on a new backend (what every `kindling volume create` pays) apart.
  await (await sqlite.createVolume({ sizeGiB: 1 })).delete();
  await (await memory.createVolume({ sizeGiB: 1 })).delete();
  for (let i = 0; i < opRuns; i++) {
    const order = i % 2 === 0 ? ["peer", "sqlite", "memory", "cold"] : ["cold", "memory", "sqlite", "peer"];
    for (const who of order) {
      if (who === "peer") {
        const spec = `${POOL}/peer-latency-${i}`;
        const c = await timed(() => peer.run("create", "--size", "1G", spec, "--no-progress"));
        create.peer.push(c);
        cold.peer.push(c);
        remove.peer.push(await timed(() => peer.run("rm", spec, "--no-progress")));
      } else if (who === "sqlite") {
        let v!: Volume;
        record(create, await tallied(async () => (v = await sqlite.createVolume({ sizeGiB: 1 }))));
        record(remove, await tallied(() => v.delete()));
      } else if (who === "memory") {
        let v!: Volume;
        create.memory.push(await timed(async () => (v = await memory.createVolume({ sizeGiB: 1 }))));
        remove.memory.push(await timed(() => v.delete()));
      } else {
        // A backend opened for this one create, records in SQLite, as the command does it.
        for (const persistence of [{ storage: "sqlite", path: dbPath }, { storage: "memory" }] as const) {
          let b!: Backend;
          let v!: Volume;
          const t = await tallied(async () => {
            b = await Backend.open({ ...config, name: "cold", persistence });
            v = await b.createVolume({ sizeGiB: 1 });
          });
          if (persistence.storage === "sqlite") record(cold, t);
          else cold.memory.push(t.total);
          await v.delete();
          await b.close();
        }
      }
    }
  }
  const row = (op: string, x: ReturnType<typeof series>): Latency => ({
    op, peer: median(x.peer), sqlite: median(x.sqlite), memory: median(x.memory), commands: median(x.commands), inCommands: median(x.inCommands), own: median(x.own),
  });
  return [row("create 1 GiB", create), row("delete", remove), row("create 1 GiB, first on a new Backend", cold)];
}

// ---- 3. NBD export

const NBD_TESTS = ["seq read 1M (MiB/s)", "seq write 1M (MiB/s)", "4k randread (IOPS)", "4k randwrite (IOPS)"] as const;

/** CPU time (s) of a process and every live descendant, with what their reaped children used. */
function treeCpuSeconds(root: number): number {
  const hz = 100; // USER_HZ on Linux
  const stats = new Map<number, { ppid: number; ticks: number }>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // After the command: state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based.
      stats.set(Number(entry), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) });
    } catch {
      // exited while we looked
    }
  }
  const inTree = (pid: number): boolean => {
    for (let p = pid, depth = 0; p > 1 && depth < 64; p = stats.get(p)?.ppid ?? 0, depth++) if (p === root) return true;
    return false;
  };
  let ticks = 0;
  for (const [pid, s] of stats) if (inTree(pid)) ticks += s.ticks;
  return ticks / hz;
}

interface Sample { value: number; server: number; osd: number }

/** One fio run; its result, and the cores the server's processes and the OSD used meanwhile. */
async function fio(uri: string, rw: string, bs: string, serverPid: number, osdPid: number): Promise<Sample> {
  const args = [
    "--name=b", "--ioengine=nbd", `--uri=${uri}`, `--rw=${rw}`, `--bs=${bs}`, "--iodepth=16", "--size=1G",
    `--runtime=${seconds}`, "--time_based", "--output-format=json",
  ];
  const before = { server: treeCpuSeconds(serverPid), osd: treeCpuSeconds(osdPid), at: process.hrtime.bigint() };
  const out = await sh("fio", args);
  const wall = Number(process.hrtime.bigint() - before.at) / 1e9;
  const server = (treeCpuSeconds(serverPid) - before.server) / wall;
  const osd = (treeCpuSeconds(osdPid) - before.osd) / wall;
  const job = JSON.parse(out.slice(out.indexOf("{"))).jobs[0];
  const side = rw.includes("read") ? job.read : job.write;
  return { value: bs === "4k" ? side.iops : side.bw / 1024, server, osd }; // IOPS, or MiB/s
}

async function fioAll(uri: string, into: Record<string, Sample[]>, serverPid: number, osdPid: number): Promise<void> {
  into[NBD_TESTS[0]].push(await fio(uri, "read", "1M", serverPid, osdPid));
  into[NBD_TESTS[1]].push(await fio(uri, "write", "1M", serverPid, osdPid));
  into[NBD_TESTS[2]].push(await fio(uri, "randread", "4k", serverPid, osdPid));
  into[NBD_TESTS[3]].push(await fio(uri, "randwrite", "4k", serverPid, osdPid));
}

async function waitForNbd(uri: string, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 150; i++) {
    if (child.exitCode !== null) throw new Error(`qemu-nbd exited with ${child.exitCode}`);
    if (spawnSync("nbdinfo", ["--size", uri]).status === 0) return;
    await sleep(100);
  }
  throw new Error(`no server at ${uri}`);
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  // librbd releases the image's exclusive lock on a clean exit; the next server needs it.
  await Promise.race([exited, sleep(15_000)]);
  if (child.exitCode === null && child.signalCode === null) {
    child.kill("SIGKILL");
    await exited;
  }
}

/**
 * qemu-nbd over the image through librbd, with the options kindling's private qemu-nbd uses,
 * on TCP: the same component kindling puts behind its own server, minus kindling.
 */
async function qemuNbd(peer: BareRbd, image: string, port: number): Promise<ChildProcess> {
  const [pool, name] = image.split("/");
  const file = { driver: "rbd", pool, image: name, conf: peer.conf, user: "kindling", "key-secret": "k" };
  // The key reaches qemu-nbd through a secret object reading the key file: never on a command line.
  const child = spawn("qemu-nbd", [
    "--object", `secret,id=k,file=${peer.keyFile},format=base64`,
    "--format", "raw", "--persistent", "--discard", "unmap", "-b", "127.0.0.1", "-p", String(port),
    `json:${JSON.stringify({ driver: "raw", file })}`,
  ], { stdio: ["ignore", "ignore", "inherit"] });
  try {
    await waitForNbd(`nbd://127.0.0.1:${port}`, child);
  } catch (err) {
    await stopChild(child);
    throw err;
  }
  return child;
}

/** The servers of the NBD part, in the order of the table's columns. */
const SERVERS = ["kindling native", "kindling via qemu-nbd", "qemu-nbd"] as const;
type ServerName = (typeof SERVERS)[number];
type NbdRow = Record<ServerName, Sample>;
interface NbdResult { rows: Record<string, NbdRow>; load: { start: number; end: number } }

async function nbdExport(cluster: Cluster, dir: string, backend: Backend, peer: BareRbd, dbPath: string): Promise<NbdResult> {
  const volume = await backend.createVolume({ name: "nbd-bench", sizeGiB: 1 });
  const image = volume.location as string;
  const osdPid = Number(readFileSync(join(cluster.dir, "run", "osd.0.pid"), "utf8").trim());
  try {
    // Full of data: reads of never-written RBD objects return zeroes without touching the OSD.
    await fill(cluster, image, 1);
    const connection = await volume.connect("nbd");
    const config = join(dir, "kindling.json");
    writeFileSync(config, JSON.stringify({
      persistence: { storage: "sqlite", path: dbPath },
      backends: { bench: { driver: "rbd", pool: POOL, monHost: cluster.monHost, user: "kindling", keyring: cluster.keyring } },
    }));
    const samples = Object.fromEntries(SERVERS.map((s) => [s, Object.fromEntries(NBD_TESTS.map((t) => [t, [] as Sample[]]))])) as Record<ServerName, Record<string, Sample[]>>;
    const log: Record<string, string> = process.env.KINDLING_BENCH_LOG ? { KINDLING_LOG_LEVEL: process.env.KINDLING_BENCH_LOG } : {};
    const kindling = async (into: Record<string, Sample[]>, env: Record<string, string>) => {
      const port = await freePort();
      const daemon = await Daemon.start(config, port, { ...log, ...env });
      try {
        await fioAll(`${daemon.uri}/nbd-bench`, into, daemon.child.pid as number, osdPid);
      } catch (err) {
        throw new Error(`${(err as Error).message}\nkindling nbd serve said:\n${daemon.log().slice(-6000)}`);
      } finally {
        await daemon.stop();
      }
    };
    const run: Record<ServerName, () => Promise<void>> = {
      "kindling native": () => kindling(samples["kindling native"], {}),
      // librbd made unloadable: the path every rbd export took before the native one.
      "kindling via qemu-nbd": () => kindling(samples["kindling via qemu-nbd"], { KINDLING_LIBRBD: join(dir, "no-librbd.so") }),
      "qemu-nbd": async () => {
        const qport = await freePort();
        const server = await qemuNbd(peer, image, qport);
        try {
          await fioAll(`nbd://127.0.0.1:${qport}`, samples["qemu-nbd"], server.pid as number, osdPid);
        } finally {
          await stopChild(server);
        }
      },
    };
    const load = { start: loadavg()[0], end: 0 };
    try {
      for (let i = 0; i < runs; i++) {
        // One server at a time (each holds the image's exclusive lock while a client writes),
        // in an order that turns each run, so none always goes first or last.
        for (let j = 0; j < SERVERS.length; j++) await run[SERVERS[(i + j) % SERVERS.length]]();
      }
    } finally {
      await connection.disconnect();
    }
    load.end = loadavg()[0];
    const med = (xs: Sample[]): Sample => ({ value: median(xs.map((x) => x.value)), server: median(xs.map((x) => x.server)), osd: median(xs.map((x) => x.osd)) });
    const rows = Object.fromEntries(NBD_TESTS.map((t) => [t, Object.fromEntries(SERVERS.map((s) => [s, med(samples[s][t])])) as NbdRow]));
    return { rows, load };
  } finally {
    await volume.delete();
  }
}

// ---- main

async function main(): Promise<void> {
  const dir = mkdtempSync(join(base, "kindling-rbd-bench-"));
  const clusterDir = join(dir, "cluster");
  // Images full of data land in the OSD's sparse block file: size it with room to spare
  // (bluestore stops writes at its 95% full ratio), and check the disk can hold what is written.
  const dataGiB = sizes.reduce((a, b) => a + b, 0) + 1;
  const osdGiB = Math.max(10, Math.ceil(dataGiB * 1.5) + 2);
  const { bavail, bsize } = statfsSync(dir);
  const freeGiB = (bavail * bsize) / GiB;
  if (freeGiB < osdGiB) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`${base} has ${freeGiB.toFixed(1)} GiB free; the cluster's OSD needs up to ${osdGiB} GiB (set KINDLING_BENCH_DIR or KINDLING_BENCH_SIZES)`);
  }
  const backends: Backend[] = [];
  const cow: CowRow[] = [];
  let lat: Latency[] = [];
  let nbd: NbdResult | undefined;
  const started = Date.now();
  // Ceph's daemons detach from this process: an interrupted bench must stop them too.
  const interrupted = (signal: NodeJS.Signals) => {
    stopCluster(clusterDir);
    rmSync(dir, { recursive: true, force: true });
    process.exit(signal === "SIGINT" ? 130 : 143);
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);
  try {
    const cluster = await startCluster(clusterDir, osdGiB);
    const keyFile = join(dir, "peer.key");
    writeFileSync(keyFile, /key\s*=\s*(\S+)/.exec(readFileSync(cluster.keyring, "utf8"))?.[1] ?? "", { mode: 0o600 });
    const peer = new BareRbd(dir, cluster, keyFile);
    const config = { driver: "rbd", pool: POOL, monHost: cluster.monHost, user: "kindling", keyring: cluster.keyring };
    const dbPath = join(dir, "kindling.db");
    // SQLite is what a user gets by default; a second backend with memory records separates its share.
    countCommands();
    const sqlite = await Backend.open({ name: "bench", ...config }, { persistence: new SqlitePersistence(dbPath) });
    backends.push(sqlite);
    const memory = await Backend.open({ name: "bench-mem", ...config }, { persistence: new MemoryPersistence() });
    backends.push(memory);

    if (parts.has("latency")) lat = await latency({ name: "bench", ...config }, sqlite, memory, peer, dbPath);
    if (parts.has("cow")) for (const size of sizes) cow.push(await copyOnWrite(cluster, sqlite, peer, size));
    if (parts.has("nbd")) nbd = await nbdExport(cluster, dir, sqlite, peer, dbPath);
  } finally {
    for (const b of backends) await b.close().catch(() => undefined);
    stopCluster(clusterDir);
    rmSync(dir, { recursive: true, force: true });
    process.removeListener("SIGINT", interrupted);
    process.removeListener("SIGTERM", interrupted);
  }

  const s = (x: number) => x.toFixed(3);
  const ms = (x: number) => (x * 1000).toFixed(0);
  const lines = [
    `Machine: ${cpus().length} cores, ${Math.round(totalmem() / GiB)} GiB, Linux ${release()}; ${new Date().toISOString().slice(0, 10)}; Ceph single-node cluster (1 bluestore OSD on a sparse file); total ${Math.round((Date.now() - started) / 1000)} s.`,
  ];
  if (cow.length) {
    const small = cow[0], big = cow[cow.length - 1];
    lines.push(
      "",
      `Snapshot and clone of an image full of data (filled by \`rbd bench\`: ${cow.map((r) => `${r.sizeGiB} GiB at ${r.fillMiBs.toFixed(0)} MiB/s`).join(", ")}); median of ${opRuns}.`,
      "",
      "| operation | image | kindling (s) | bare rbd (s) | kindling / rbd | rbd commands, kindling / bare |",
      "|---|---|---|---|---|---|",
      ...COW_OPS.flatMap((op) => cow.map((r) => `| ${op} | ${r.sizeGiB} GiB | ${s(r.k[op])} | ${s(r.peer[op])} | ${(r.k[op] / r.peer[op]).toFixed(2)} | ${r.commands[op]} / ${PEER_COMMANDS[op]} |`)),
      "",
      `| operation | kindling, ${big.sizeGiB} GiB / ${small.sizeGiB} GiB | bare rbd, ${big.sizeGiB} GiB / ${small.sizeGiB} GiB |`,
      "|---|---|---|",
      ...COW_OPS.map((op) => `| ${op} | ${(big.k[op] / small.k[op]).toFixed(2)} | ${(big.peer[op] / small.peer[op]).toFixed(2)} |`),
    );
  }
  if (lat.length) {
    lines.push(
      "",
      `Create and delete latency (empty 1 GiB image); median of ${opRuns}, after one untimed warm-up each.`,
      "",
      "| operation | bare rbd (ms) | kindling, SQLite (ms) | kindling, memory (ms) | kindling SQLite / rbd | rbd/ceph commands run by kindling | time in them (ms) | kindling's own (ms) |",
      "|---|---|---|---|---|---|---|---|",
      ...lat.map((l) => `| ${l.op} | ${ms(l.peer)} | ${ms(l.sqlite)} | ${ms(l.memory)} | ${(l.sqlite / l.peer).toFixed(2)} | ${l.commands} | ${ms(l.inCommands)} | ${ms(l.own)} |`),
    );
  }
  if (nbd) {
    const r = nbd.rows;
    const c = (x: number) => x.toFixed(2);
    lines.push(
      "",
      `NBD export of a 1 GiB RBD volume full of data; fio nbd engine, one connection, iodepth 16, ${seconds} s; median of ${runs}; ` +
        `1-minute load ${nbd.load.start.toFixed(2)} at the start of this part, ${nbd.load.end.toFixed(2)} at its end.`,
      "",
      "| test | kindling native | kindling via qemu-nbd | qemu-nbd (librbd) | native / qemu-nbd | via qemu-nbd / qemu-nbd |",
      "|---|---|---|---|---|---|",
      ...NBD_TESTS.map((t) => {
        const [n, v, q] = SERVERS.map((s) => r[t][s].value);
        return `| ${t} | ${n.toFixed(0)} | ${v.toFixed(0)} | ${q.toFixed(0)} | ${(n / q).toFixed(2)} | ${(v / q).toFixed(2)} |`;
      }),
      "",
      "CPU during the same runs, in cores (CPU seconds over wall seconds; medians): the server's processes (kindling's daemon with its private qemu-nbd, or qemu-nbd alone), and the OSD.",
      "",
      "| test | native: server | native: OSD | via qemu-nbd: server | via qemu-nbd: OSD | qemu-nbd: server | qemu-nbd: OSD |",
      "|---|---|---|---|---|---|---|",
      ...NBD_TESTS.map((t) => `| ${t} | ${SERVERS.map((s) => `${c(r[t][s].server)} | ${c(r[t][s].osd)}`).join(" | ")} |`),
    );
  }
  const table = lines.join("\n");
  console.log(table);
  mkdirSync(join(ROOT, "bench", "results"), { recursive: true });
  writeFileSync(join(ROOT, "bench", "results", "rbd.md"), `${table}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
