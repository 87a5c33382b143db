// Volumes on object storage: kindling's object driver, exported by the real `kindling nbd serve`,
// against the NBD servers that keep a block device in S3 or Swift, on the same stores in the
// same run, taking turns (the order flips every run).
//  - radosgw's S3 API (a throwaway single-node Ceph 16 cluster, one bluestore OSD): kindling
//    (api s3) against nbdkit's S3 plugin (Debian's, objects of 64 KiB and of 1 MiB, behind the
//    blocksize filter) and s3backer 1.5.4 (FUSE, blocks of 64 KiB and 1 MiB, a 512 MiB block
//    cache, its file served by `nbdkit file` so that the same NBD clients drive every server);
//  - a Swift all-in-one: kindling (api swift) against swiftnbd 0.11 (bench/vendor), which needs
//    three fixes to start on Python 3.11 (it is run as shipped first, and its error reported).
// Rows, each server process fresh: nbdcopy of a file of random data into the export with its
// final FLUSH (and the objects, and on radosgw the PUTs, that costs); nbdcopy of the export to
// null:; then fio's nbd engine, 4 KiB random reads at QD32 and 4 KiB random writes at QD32
// with a FLUSH about every second (`--fsync=N`, N the server's IOPS in the run before). The
// optional row `fragread` reads the export sequentially once more after the random writes
// (kindling's blocks then lie scattered over many records). Then snapshot, clone and extend
// of a small and a large volume, half written, through the library; the peers have none. And
// the store itself through the driver's own HTTP client (what no server on it can beat): 1 GiB
// as 32 MiB PUTs one at a time and with 4 in flight, read back whole with 4 in flight, and
// 64 KiB ranged GETs at random with 32 in flight.
//   KINDLING_BENCH_RUNS=3  KINDLING_BENCH_PARTS=s3,s3-cow,s3-store,swift,swift-cow,swift-store
//   KINDLING_BENCH_SUBJECTS=kindling,nbdkit-64k,nbdkit-1m,s3backer-64k,s3backer-1m,swiftnbd
//   KINDLING_BENCH_ROWS=seqwrite,seqread,randread,randwrite (and fragread)
//   KINDLING_BENCH_LARGE_ROWS=seqwrite,seqread (the 1 MiB-object peers: a 4 KiB write is a
//     read-modify-write of 1 MiB for them, slower than at 64 KiB in every run measured)
//   KINDLING_BENCH_MIB=1024 (sequential data: kindling, 1 MiB-object peers)
//   KINDLING_BENCH_SMALL_MIB=256 (64 KiB-object peers)  KINDLING_BENCH_SWIFTNBD_MIB=64
//   KINDLING_BENCH_SECONDS=30 (kindling's random writes on radosgw)  KINDLING_BENCH_SWIFT_SECONDS=10
//   KINDLING_BENCH_PEER_SECONDS=5 (the peers' random writes)  KINDLING_BENCH_READ_SECONDS=5
//   KINDLING_BENCH_SIZES=1,32  KINDLING_BENCH_SWIFT_SIZES=1,8 (GiB)  KINDLING_BENCH_OP_RUNS=3
//   KINDLING_BENCH_DIR=/var/tmp  KINDLING_BENCH_PROFILE=DIR (kindling's daemons run --cpu-prof)
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, cpSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync, statfsSync, writeFileSync, writeSync } from "node:fs";
import { cpus, loadavg, release, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Backend, type Volume } from "../provider/library";
import { S3Store } from "../provider/drivers/object/s3";
import { SwiftStore } from "../provider/drivers/object/swift";
import type { ObjectStore } from "../provider/drivers/object/store";
import { GiB, MiB } from "../provider/util/sizes";
import { CephCluster } from "../test/helpers/ceph";
import { KINDLING } from "../test/helpers/cli";
import { Daemon, freePort } from "../test/helpers/daemon";
import { removeDir } from "../test/helpers/env";
import { SwiftAio } from "../test/helpers/objectstores";

const env = process.env;
const list = (name: string, fallback: string) => (env[name] ?? fallback).split(",").map((s) => s.trim()).filter(Boolean);
const runs = Number(env.KINDLING_BENCH_RUNS ?? 3);
const parts = new Set(list("KINDLING_BENCH_PARTS", "s3,s3-cow,s3-store,swift,swift-cow,swift-store"));
const wanted = new Set(list("KINDLING_BENCH_SUBJECTS", "kindling,nbdkit-64k,nbdkit-1m,s3backer-64k,s3backer-1m,swiftnbd"));
const rows = new Set(list("KINDLING_BENCH_ROWS", "seqwrite,seqread,randread,randwrite"));
const largeRows = new Set(list("KINDLING_BENCH_LARGE_ROWS", "seqwrite,seqread"));
/** The rows of a peer by its object or block size. */
const peerRows = (unit: number) => (unit < MiB ? rows : new Set([...rows].filter((r) => largeRows.has(r))));
const seqBytes = Number(env.KINDLING_BENCH_MIB ?? 1024) * MiB;
const smallBytes = Number(env.KINDLING_BENCH_SMALL_MIB ?? 256) * MiB;
const swiftnbdBytes = Number(env.KINDLING_BENCH_SWIFTNBD_MIB ?? 64) * MiB;
const writeSeconds = Number(env.KINDLING_BENCH_SECONDS ?? 30);
const swiftWriteSeconds = Number(env.KINDLING_BENCH_SWIFT_SECONDS ?? 10);
const peerWriteSeconds = Number(env.KINDLING_BENCH_PEER_SECONDS ?? 5);
const readSeconds = Number(env.KINDLING_BENCH_READ_SECONDS ?? 5);
const cowSizes = list("KINDLING_BENCH_SIZES", "1,32").map(Number);
const swiftCowSizes = list("KINDLING_BENCH_SWIFT_SIZES", "1,8").map(Number);
const opRuns = Number(env.KINDLING_BENCH_OP_RUNS ?? 3);
const base = env.KINDLING_BENCH_DIR ?? "/var/tmp";
const profileDir = env.KINDLING_BENCH_PROFILE ? resolve(env.KINDLING_BENCH_PROFILE) : undefined;
const ROOT = resolve(__dirname, "..", "..");
const NBDKIT_S3 = join(ROOT, "bench", "nbdkit-s3-plugin.py");
const SWIFTNBD = join(ROOT, "bench", "vendor", "swiftnbd-0.11");
/** Debian's, which has boto3 and swiftclient (a python3 earlier on PATH may not). */
const PYTHON = "/usr/bin/python3";

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
/** The machine's 1-minute load after each row: others share it, and the table says how much. */
const loads: number[] = [];
const say = (line: string) => {
  loads.push(loadavg()[0]);
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line} (load ${loadavg()[0].toFixed(1)})\n`);
};

async function timed(work: () => unknown): Promise<number> {
  const start = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

// ---- processes: each with its output in a log file, stopped by its pid

const running = new Set<Proc>();
const daemons = new Set<Daemon>();
const mounts = new Set<string>();

class Proc {
  readonly exited: Promise<void>;
  private constructor(readonly name: string, readonly child: ChildProcess, readonly log: string) {
    running.add(this);
    this.exited = new Promise((r) => child.once("exit", () => r()));
    void this.exited.then(() => running.delete(this));
  }

  static start(name: string, command: string, args: string[], opts: { log: string; env?: NodeJS.ProcessEnv; cwd?: string }): Proc {
    const fd = openSync(opts.log, "a");
    try {
      const child = spawn(command, args, { stdio: ["ignore", fd, fd], env: opts.env ?? { PATH: env.PATH }, cwd: opts.cwd });
      return new Proc(name, child, opts.log);
    } finally {
      closeSync(fd);
    }
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  tail(): string {
    return existsSync(this.log) ? readFileSync(this.log, "utf8").slice(-3000) : "";
  }

  /** SIGTERM (none when `signal` is null: it is on its way out), then SIGKILL once `graceMs` has passed. */
  async stop(graceMs = 30_000, signal: NodeJS.Signals | null = "SIGTERM"): Promise<void> {
    if (!this.alive) return;
    if (signal) this.child.kill(signal);
    const gone = await Promise.race([this.exited.then(() => true), sleep(graceMs, undefined, { ref: false }).then(() => false)]);
    if (!gone) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
  }
}

async function waitForNbd(uri: string, proc: { alive: boolean; tail(): string; name: string }): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (!proc.alive) throw new Error(`${proc.name} exited before it served ${uri}:\n${proc.tail()}`);
    if (spawnSync("nbdinfo", ["--size", uri]).status === 0) return;
    await sleep(100);
  }
  throw new Error(`${proc.name}: nothing served at ${uri} within 60 s:\n${proc.tail()}`);
}

function run(command: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): string {
  const r = spawnSync(command, args, { encoding: "utf8", maxBuffer: 256 * MiB, env: opts.env ?? process.env, cwd: opts.cwd });
  if (r.status !== 0) throw new Error(`${command} ${args.join(" ")} failed (${r.status ?? r.signal}): ${r.stderr.slice(-2000)}`);
  return r.stdout;
}

// ---- the clients

interface FioResult {
  iops: number;
  ios: number;
  seconds: number;
}

function fio(uri: string, rw: "randwrite" | "randread", bytes: number, seconds: number, fsyncEvery?: number): FioResult {
  const args = [
    "--name=bench", "--ioengine=nbd", `--uri=${uri}`, `--rw=${rw}`, "--bs=4k", "--iodepth=32", `--size=${bytes}`,
    `--runtime=${seconds}`, "--time_based", "--output-format=json",
  ];
  if (fsyncEvery) args.push(`--fsync=${fsyncEvery}`);
  const out = run("fio", args);
  const job = JSON.parse(out.slice(out.indexOf("{"))).jobs[0];
  if (job.error) throw new Error(`fio ${rw} on ${uri}: error ${job.error}`);
  const side = rw === "randread" ? job.read : job.write;
  return { iops: side.iops, ios: side.total_ios, seconds: job.job_runtime / 1000 };
}

/** A file of random data of `bytes`, made once per size: nbdcopy's source, in the page cache after its first copy. */
function source(dir: string, bytes: number): string {
  const path = join(dir, `source-${bytes / MiB}M.img`);
  if (existsSync(path)) return path;
  const fd = openSync(path, "w");
  for (let at = 0; at < bytes; at += 16 * MiB) writeSync(fd, randomBytes(Math.min(16 * MiB, bytes - at)));
  closeSync(fd);
  return path;
}

// ---- what is counted in the stores

async function countObjects(store: ObjectStore, prefix: string): Promise<number> {
  let n = 0;
  for await (const _ of store.list(prefix)) n++;
  return n;
}

/** Successful PUTs under `path` in radosgw's log (one `beast:` line a request) from now on. */
function putCounter(log: string, path: string): () => number {
  const from = statSync(log).size;
  const pattern = new RegExp(`"PUT ${path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\S* HTTP/1\\.1" 200 `, "g");
  return () => {
    const size = statSync(log).size;
    const buf = Buffer.alloc(size - from);
    const fd = openSync(log, "r");
    try {
      readSync(fd, buf, 0, buf.length, from);
    } finally {
      closeSync(fd);
    }
    return buf.toString("latin1").match(pattern)?.length ?? 0;
  };
}

// ---- the servers under test

interface Export {
  uri: string;
  /** Resolves once everything acknowledged is in the store: s3backer acknowledges from its cache, and its FLUSH does nothing. */
  settle(): Promise<void>;
  stop(): Promise<void>;
}

interface Subject {
  key: string;
  label: string;
  /** The sequential rows' data, and the region of the random ones. */
  bytes: number;
  writeSeconds: number;
  /** The rows this subject takes part in. */
  rows: Set<string>;
  /** fio's --fsync=N in the first run (later runs take the last IOPS). */
  flushGuess: number;
  /** Before a run's rows (kindling: a fresh volume). */
  beginRun(run: number): Promise<void>;
  /** Every run writes where nothing was (kindling's fresh volumes); the peers overwrite their first run's objects. */
  freshEachRun: boolean;
  start(run: number): Promise<Export>;
  objects(): Promise<number>;
  puts?(): () => number;
  endRun(run: number): Promise<void>;
}

interface KindlingSetup {
  key: string;
  writeSeconds: number;
  dir: string;
  backend: Record<string, unknown>;
  store: ObjectStore;
  rgwLog?: string;
  bucket?: string;
}

/** kindling: a fresh volume each run, made and connected with bin/kindling, exported by `kindling nbd serve`. */
function kindlingSubject(s: KindlingSetup): Subject {
  const config = join(s.dir, `${s.key}.json`);
  writeFileSync(config, JSON.stringify({ persistence: { storage: "sqlite", path: join(s.dir, `${s.key}.db`) }, backends: { bench: s.backend } }, null, 2), { mode: 0o600 });
  const cli = (...args: string[]) => JSON.parse(run(KINDLING, ["--config", config, "--json", ...args])) as { id: string };
  const sizeGiB = Math.max(1, Math.ceil(seqBytes / GiB));
  let volume = { name: "", id: "" };
  return {
    key: s.key,
    label: "kindling",
    bytes: seqBytes,
    writeSeconds: s.writeSeconds,
    rows,
    freshEachRun: true,
    flushGuess: 10_000,
    async beginRun(r) {
      const name = `seq-${r}`;
      volume = { name, id: cli("volume", "create", name, "--size", String(sizeGiB)).id };
      cli("connect", name, "--protocol", "nbd");
    },
    async start(r) {
      const extra: Record<string, string> = {};
      if (profileDir) extra.NODE_OPTIONS = `--cpu-prof --cpu-prof-dir=${join(profileDir, `${s.key}-run${r + 1}`)}`;
      const daemon = await Daemon.start(config, await freePort(), extra);
      daemons.add(daemon);
      const stop = async () => {
        await daemon.stop();
        daemons.delete(daemon);
      };
      return { uri: `${daemon.uri}/${volume.name}`, settle: async () => undefined, stop };
    },
    objects: () => countObjects(s.store, `kindling/v1/vol/${volume.id}/`),
    puts: s.rgwLog ? () => putCounter(s.rgwLog as string, `/${s.bucket}/kindling/v1/vol/${volume.id}/`) : undefined,
    async endRun() {
      cli("disconnect", volume.name);
      cli("volume", "delete", volume.name);
    },
  };
}

interface RgwSetup {
  dir: string;
  endpoint: string;
  accessKey: string;
  secretKey: string;
  rgwLog: string;
}

const sizeName = (bytes: number) => (bytes >= MiB ? `${bytes / MiB} MiB` : `${bytes / 1024} KiB`);

/** nbdkit's S3 plugin (Debian's, through bench/nbdkit-s3-plugin.py) behind the blocksize filter; credentials by environment. */
function nbdkitSubject(rgw: RgwSetup, store: ObjectStore, bucket: string, objectSize: number): Subject {
  const prefix = `${objectSize / 1024}k`;
  const bytes = objectSize < MiB ? smallBytes : seqBytes;
  return {
    key: `nbdkit-${objectSize < MiB ? "64k" : "1m"}`,
    label: `nbdkit S3, ${sizeName(objectSize)} objects`,
    bytes,
    writeSeconds: peerWriteSeconds,
    rows: peerRows(objectSize),
    freshEachRun: false,
    flushGuess: 200,
    beginRun: async () => undefined,
    async start(r) {
      const port = await freePort();
      const proc = Proc.start("nbdkit S3", "nbdkit", [
        "-f", "-i", "127.0.0.1", "-p", String(port), "--filter=blocksize", "python", NBDKIT_S3,
        `endpoint-url=${rgw.endpoint}`, `bucket=${bucket}`, `key=${prefix}`, `size=${bytes}`, `object-size=${objectSize}`, "minblock=4k",
      ], {
        log: join(rgw.dir, `nbdkit-${prefix}-run${r + 1}.log`),
        // boto3 takes its keys from here: never on a command line; no ~/.aws is read.
        env: {
          PATH: env.PATH, HOME: rgw.dir, AWS_ACCESS_KEY_ID: rgw.accessKey, AWS_SECRET_ACCESS_KEY: rgw.secretKey,
          AWS_CONFIG_FILE: "/dev/null", AWS_SHARED_CREDENTIALS_FILE: "/dev/null", AWS_EC2_METADATA_DISABLED: "true",
        },
      });
      const uri = `nbd://127.0.0.1:${port}`;
      await waitForNbd(uri, proc);
      return { uri, settle: async () => undefined, stop: () => proc.stop() };
    },
    objects: () => countObjects(store, `${prefix}/`),
    puts: () => putCounter(rgw.rgwLog, `/${bucket}/${prefix}/`),
    endRun: async () => undefined,
  };
}

/**
 * s3backer mounted in the foreground (a fresh mount is a fresh process), its file served by
 * `nbdkit file`. Its MD5 cache is off (with it, at most 1000 blocks may be written per 10 s: a
 * guard against stale reads on eventually consistent S3, which radosgw is not).
 */
function s3backerSubject(rgw: RgwSetup, store: ObjectStore, bucket: string, blockSize: number): Subject {
  const prefix = `${blockSize / 1024}k`;
  const bytes = blockSize < MiB ? smallBytes : seqBytes;
  const mnt = join(rgw.dir, `s3backer-${prefix}`);
  const passwd = join(rgw.dir, "s3backer.passwd");
  writeFileSync(passwd, `${rgw.accessKey}:${rgw.secretKey}\n`, { mode: 0o600 });
  mkdirSync(mnt, { recursive: true });
  const stats = join(mnt, "stats");
  return {
    key: `s3backer-${blockSize < MiB ? "64k" : "1m"}`,
    label: `s3backer, ${sizeName(blockSize)} blocks`,
    bytes,
    writeSeconds: peerWriteSeconds,
    rows: peerRows(blockSize),
    freshEachRun: false,
    flushGuess: 200,
    beginRun: async () => undefined,
    async start(r) {
      const s3backer = Proc.start("s3backer", "s3backer", [
        "-f", `--baseURL=${rgw.endpoint}/`, `--accessFile=${passwd}`, `--accessId=${rgw.accessKey}`, `--prefix=${prefix}/`,
        `--blockSize=${blockSize}`, `--size=${bytes}`, `--blockCacheSize=${Math.round((512 * MiB) / blockSize)}`, "--listBlocks",
        "--md5CacheSize=0", "--md5CacheTime=0", "--minWriteDelay=0", bucket, mnt,
      ], { log: join(rgw.dir, `s3backer-${prefix}-run${r + 1}.log`), env: { PATH: env.PATH, HOME: rgw.dir } });
      mounts.add(mnt);
      const file = join(mnt, "file");
      for (let i = 0; !(existsSync(file) && statSync(file).size === bytes); i++) {
        if (!s3backer.alive || i > 600) throw new Error(`s3backer did not mount ${mnt}:\n${s3backer.tail()}`);
        await sleep(100);
      }
      const port = await freePort();
      const nbdkit = Proc.start("nbdkit file", "nbdkit", ["-f", "-i", "127.0.0.1", "-p", String(port), "file", file], { log: join(rgw.dir, `nbdkit-file-${prefix}-run${r + 1}.log`) });
      const uri = `nbd://127.0.0.1:${port}`;
      await waitForNbd(uri, nbdkit);
      return {
        uri,
        async settle() {
          // Blocks dirty or being written; the ratio has four decimals, and one block of the cache is more than 0.0001.
          while (!/^block_cache_dirty_ratio\s+0\.0000$/m.test(readFileSync(stats, "utf8"))) await sleep(50);
        },
        async stop() {
          await nbdkit.stop();
          // Unmounting makes s3backer write what is dirty and exit.
          run("umount", [mnt]);
          mounts.delete(mnt);
          await s3backer.stop(120_000, null);
        },
      };
    },
    objects: () => countObjects(store, `${prefix}/`),
    puts: () => putCounter(rgw.rgwLog, `/${bucket}/${prefix}/`),
    endRun: async () => undefined,
  };
}

/** What happens when swiftnbd 0.11 is started as shipped on this Python: its error and where, or undefined if it starts. */
function swiftnbdAsShipped(dir: string): string | undefined {
  const copy = join(dir, "swiftnbd-as-shipped");
  cpSync(SWIFTNBD, copy, { recursive: true });
  const r = spawnSync(PYTHON, [join(copy, "bin", "swiftnbd-server"), "--help"], { encoding: "utf8", env: { PATH: env.PATH, PYTHONPATH: copy } });
  if (r.status === 0) return undefined;
  // The last frame names the file and line at fault; the line after it is the code there.
  const lines = r.stderr.trim().split("\n");
  const frame = lines.map((l, i) => ({ l, i })).filter(({ l }) => /^\s*File ".*", line \d+/.test(l)).pop();
  const where = frame ? frame.l.trim().replace(`${copy}/`, "").replace(/^File "([^"]+)", line (\d+).*$/, "$1:$2") : "";
  const code = frame ? lines[frame.i + 1]?.trim() : "";
  return `${lines[lines.length - 1]} at ${where} (\`${code}\`)`;
}

/**
 * The three changes Python 3.7-3.11 need in swiftnbd/server.py, nothing else: `asyncio.async`
 * is a syntax error since `async` became a keyword (3.7), `@asyncio.coroutine` is gone (3.11;
 * `types.coroutine` is what it wrapped), and `start_server` lost its `loop` argument (3.10).
 */
const SWIFTNBD_PORT: Array<[string, string]> = [
  ["import asyncio\n", "import asyncio\nimport types\n"],
  ["@asyncio.coroutine", "@types.coroutine"],
  ["asyncio.async(self.log_stats(), loop=loop)", "asyncio.ensure_future(self.log_stats(), loop=loop)"],
  ["asyncio.start_server(self.handler, addr, port, loop=loop)", "asyncio.start_server(self.handler, addr, port)"],
];

function swiftnbdSubject(dir: string, aio: SwiftAio, store: ObjectStore, container: string): Subject {
  const copy = join(dir, "swiftnbd-ported");
  cpSync(SWIFTNBD, copy, { recursive: true });
  const server = join(copy, "swiftnbd", "server.py");
  let text = readFileSync(server, "utf8");
  for (const [from, to] of SWIFTNBD_PORT) {
    if (!text.includes(from)) throw new Error(`swiftnbd's server.py has no ${JSON.stringify(from)}: not the 0.11 it was ported from`);
    text = text.split(from).join(to);
  }
  writeFileSync(server, text);
  // Its secrets file is the only place it takes a key from.
  const secrets = join(dir, "swiftnbd-secrets.conf");
  writeFileSync(secrets, `[${container}]\nusername = ${aio.user}\npassword = ${aio.key}\n`, { mode: 0o600 });
  const pyEnv = { PATH: env.PATH, HOME: dir, PYTHONPATH: copy };
  const objects = swiftnbdBytes / (64 * 1024);
  run(PYTHON, [join(copy, "bin", "swiftnbd-ctl"), "--secrets", secrets, "-a", aio.authUrl, "setup", container, String(objects)], { env: pyEnv });
  return {
    key: "swiftnbd",
    label: "swiftnbd 0.11 (ported)",
    bytes: swiftnbdBytes,
    writeSeconds: peerWriteSeconds,
    rows,
    freshEachRun: false,
    flushGuess: 30,
    beginRun: async () => undefined,
    async start(r) {
      const port = await freePort();
      const proc = Proc.start("swiftnbd", PYTHON, [
        join(copy, "bin", "swiftnbd-server"), "--secrets", secrets, "-a", aio.authUrl, "-b", "127.0.0.1", "-p", String(port), "-f",
        "--pid-file", join(dir, "swiftnbd.pid"),
      ], { log: join(dir, `swiftnbd-run${r + 1}.log`), env: pyEnv });
      const uri = `nbd://127.0.0.1:${port}/${container}`;
      await waitForNbd(uri, proc);
      // SIGTERM: it unlocks the container and removes its pid file on the way out.
      return { uri, settle: async () => undefined, stop: () => proc.stop() };
    },
    objects: () => countObjects(store, "disk.part/"),
    endRun: async () => undefined,
  };
}

// ---- the rows

interface Sample {
  seqWrite?: number;
  objectsPerGiB?: number;
  putsPerGiB?: number;
  seqRead?: number;
  randRead?: number;
  randWrite?: number;
  flushEvery?: number;
  drain?: number;
  fragRead?: number;
}

/** Runs `work` against a fresh server process of `s`, stopped afterwards whatever happens. */
async function withServer<T>(s: Subject, r: number, work: (e: Export) => Promise<T>): Promise<T> {
  const e = await s.start(r);
  try {
    return await work(e);
  } finally {
    await e.stop();
  }
}

async function measureRun(s: Subject, r: number, last: Sample | undefined): Promise<Sample> {
  const out: Sample = {};
  const has = (row: string) => s.rows.has(row);
  const note = (what: string) => say(`${s.key} run ${r + 1}: ${what}`);
  await s.beginRun(r);
  if (has("seqwrite")) {
    await withServer(s, r, async (e) => {
      const before = await s.objects();
      const puts = s.puts?.();
      const file = source(workDir, s.bytes);
      const t = await timed(async () => {
        run("nbdcopy", ["--flush", file, e.uri]);
        await e.settle();
      });
      out.seqWrite = s.bytes / MiB / t;
      // New objects count only where nothing was written before: the peers overwrite theirs after the first run.
      if (s.freshEachRun || r === 0) out.objectsPerGiB = ((await s.objects()) - before) / (s.bytes / GiB);
      if (puts) out.putsPerGiB = puts() / (s.bytes / GiB);
    });
    note(`seq write ${out.seqWrite?.toFixed(1)} MiB/s, ${out.objectsPerGiB?.toFixed(0)} objects/GiB, ${out.putsPerGiB?.toFixed(0) ?? "?"} PUTs/GiB`);
  }
  if (has("seqread")) {
    out.seqRead = await withServer(s, r, async (e) => s.bytes / MiB / (await timed(() => run("nbdcopy", [e.uri, "null:"]))));
    note(`seq read ${out.seqRead.toFixed(1)} MiB/s`);
  }
  if (has("randread") || has("randwrite")) {
    // Reads first, of what the sequential write left; then writes, in the same process.
    await withServer(s, r, async (e) => {
      if (has("randread")) {
        out.randRead = fio(e.uri, "randread", s.bytes, readSeconds).iops;
        note(`rand read ${out.randRead.toFixed(0)} IOPS`);
      }
      if (has("randwrite")) {
        out.flushEvery = Math.max(1, Math.round(last?.randWrite ?? s.flushGuess));
        const f = fio(e.uri, "randwrite", s.bytes, s.writeSeconds, out.flushEvery);
        out.drain = await timed(() => e.settle());
        out.randWrite = f.ios / (f.seconds + out.drain);
        note(`rand write ${out.randWrite.toFixed(0)} IOPS (fio ${f.iops.toFixed(0)}, then ${out.drain.toFixed(1)} s until nothing was dirty; fsync=${out.flushEvery})`);
      }
    });
  }
  if (has("fragread")) {
    out.fragRead = await withServer(s, r, async (e) => s.bytes / MiB / (await timed(() => run("nbdcopy", [e.uri, "null:"]))));
    note(`seq read after the random writes ${out.fragRead.toFixed(1)} MiB/s`);
  }
  await s.endRun(r);
  return out;
}

/** Every subject `runs` times, in an order that flips each run; their samples by key. */
async function measureAll(subjects: Subject[]): Promise<Map<string, Sample[]>> {
  const samples = new Map<string, Sample[]>(subjects.map((s) => [s.key, []]));
  for (let r = 0; r < runs; r++) {
    const order = r % 2 === 0 ? subjects : [...subjects].reverse();
    for (const s of order) {
      const mine = samples.get(s.key) as Sample[];
      mine.push(await measureRun(s, r, mine[mine.length - 1]));
    }
  }
  return samples;
}

// ---- snapshot, clone and extend through the library

interface CowRow {
  sizeGiB: number;
  fillMiBs: number;
  snapshot: number;
  clone: number;
  extend: number;
}

/** Writes the first half of the volume, 8 MiB at a time, random data with a stamp in every 4 KiB, then FLUSH. */
async function writeHalf(volume: Volume): Promise<number> {
  const device = await volume.open();
  const chunk = randomBytes(8 * MiB);
  const half = device.size / 2;
  const seconds = await timed(async () => {
    for (let at = 0; at < half; at += chunk.length) {
      for (let i = 0; i < chunk.length; i += 4096) chunk.writeDoubleLE(at + i, i);
      await device.pwrite(chunk, at);
    }
    await device.flush();
  });
  await device.close();
  return half / MiB / seconds;
}

async function copyOnWrite(backendConfig: Record<string, unknown>, dir: string, label: string, sizes: number[]): Promise<CowRow[]> {
  const backend = await Backend.open({ name: "cow", ...backendConfig, persistence: { storage: "sqlite", path: join(dir, `cow-${label}.db`) } } as Parameters<typeof Backend.open>[0]);
  const out: CowRow[] = [];
  try {
    for (const sizeGiB of sizes) {
      const volume = await backend.createVolume({ name: `cow-${sizeGiB}`, sizeGiB });
      try {
        const fillMiBs = await writeHalf(volume);
        say(`${label} cow ${sizeGiB} GiB: first half written at ${fillMiBs.toFixed(0)} MiB/s`);
        const snap: number[] = [], clone: number[] = [], extend: number[] = [];
        for (let i = 0; i < opRuns; i++) {
          let s!: Awaited<ReturnType<Volume["createSnapshot"]>>;
          snap.push(await timed(async () => (s = await volume.createSnapshot())));
          await s.delete();
          let c!: Volume;
          clone.push(await timed(async () => (c = await volume.clone())));
          await c.delete();
        }
        // Last, so that every snapshot and clone above is of the size named.
        for (let i = 0; i < opRuns; i++) {
          const to = volume.sizeGiB + 100;
          extend.push(await timed(() => volume.extend(to)));
        }
        out.push({ sizeGiB, fillMiBs, snapshot: median(snap), clone: median(clone), extend: median(extend) });
        say(`${label} cow ${sizeGiB} GiB: snapshot ${(median(snap) * 1000).toFixed(0)} ms, clone ${(median(clone) * 1000).toFixed(0)} ms, extend ${(median(extend) * 1000).toFixed(0)} ms`);
      } finally {
        await volume.delete();
      }
    }
  } finally {
    await backend.close();
  }
  return out;
}

// ---- the store itself

interface StoreRow {
  putOne: number;
  putFour: number;
  getFour: number;
  smallGets: number;
}

/** `count` jobs, `inFlight` at a time. */
async function pooled(count: number, inFlight: number, job: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: inFlight }, async () => {
    for (let i = next++; i < count; i = next++) await job(i);
  }));
}

/** The ceiling any NBD server on this store meets, through kindling's own client: MiB/s and GETs/s. */
async function storeCeiling(store: ObjectStore, label: string): Promise<StoreRow> {
  const big = 32 * MiB;
  const objects = GiB / big;
  const body = randomBytes(big);
  const samples: StoreRow[] = [];
  for (let r = 0; r < runs; r++) {
    const key = (i: number) => `ceiling/${r}/${i}`;
    const putOne = GiB / MiB / (await timed(() => pooled(objects, 1, (i) => store.put(key(i), body))));
    const putFour = GiB / MiB / (await timed(() => pooled(objects, 4, (i) => store.put(key(i), body))));
    const getFour = GiB / MiB / (await timed(() => pooled(objects, 4, (i) => store.get(key(i)))));
    const small = 2000;
    const smallGets = small / (await timed(() => pooled(small, 32, () => store.get(key(Math.floor(Math.random() * objects)), { offset: Math.floor(Math.random() * (big / 65536)) * 65536, length: 65536 }))));
    await pooled(objects, 8, (i) => store.delete(key(i)));
    samples.push({ putOne, putFour, getFour, smallGets });
    say(`${label} store: PUT ${putOne.toFixed(0)} / ${putFour.toFixed(0)} MiB/s, GET ${getFour.toFixed(0)} MiB/s, ${smallGets.toFixed(0)} small GETs/s`);
  }
  const pick = (k: keyof StoreRow) => median(samples.map((x) => x[k]));
  return { putOne: pick("putOne"), putFour: pick("putFour"), getFour: pick("getFour"), smallGets: pick("smallGets") };
}

function storeTable(row: StoreRow): string[] {
  return [
    "| the store itself, kindling's HTTP client | value |",
    "|---|---|",
    `| PUT of 32 MiB objects, one at a time (MiB/s) | ${row.putOne.toFixed(0)} |`,
    `| PUT of 32 MiB objects, 4 in flight (MiB/s) | ${row.putFour.toFixed(0)} |`,
    `| GET of 32 MiB objects whole, 4 in flight (MiB/s) | ${row.getFour.toFixed(0)} |`,
    `| ranged GETs of 64 KiB at random, 32 in flight (GETs/s) | ${row.smallGets.toFixed(0)} |`,
  ];
}

// ---- tables

interface Target {
  /** What the row must reach, in the row's unit; `ratio`: and at least this times the best peer. */
  min?: number;
  max?: number;
  ratio?: number;
  text: string;
}

interface Row {
  title: string;
  pick: (s: Sample) => number | undefined;
  /** Lower is better (objects per GiB). */
  lower?: boolean;
  digits?: number;
  target?: Target;
}

function nbdTable(subjects: Subject[], samples: Map<string, Sample[]>, rowsOf: Row[]): string[] {
  const kindling = subjects[0];
  const peers = subjects.slice(1);
  const med = (s: Subject, row: Row) => {
    const xs = (samples.get(s.key) ?? []).map(row.pick).filter((x): x is number => x !== undefined);
    return xs.length ? median(xs) : undefined;
  };
  const fmt = (x: number | undefined, digits = 0) => (x === undefined ? "—" : x.toFixed(x < 10 && digits === 0 ? 1 : digits));
  const lines = [
    `| row | ${subjects.map((s) => s.label).join(" | ")} | best peer | kindling / best peer | target | met |`,
    `|---|${subjects.map(() => "---").join("|")}|---|---|---|---|`,
  ];
  for (const row of rowsOf) {
    const k = med(kindling, row);
    if (k === undefined) continue;
    const values = peers.map((p) => ({ p, v: med(p, row) })).filter((x): x is { p: Subject; v: number } => x.v !== undefined);
    const best = values.sort((a, b) => (row.lower ? a.v - b.v : b.v - a.v))[0];
    const ratio = best ? k / best.v : undefined;
    const t = row.target;
    let met = "";
    if (t) {
      const abs = (t.min === undefined || k >= t.min) && (t.max === undefined || k <= t.max);
      const rel = t.ratio === undefined || (ratio !== undefined && ratio >= t.ratio);
      met = abs && rel ? "yes" : !abs || ratio !== undefined ? "no" : "no peer to compare";
    }
    lines.push(
      `| ${row.title} | ${subjects.map((s) => fmt(med(s, row), row.digits)).join(" | ")} | ${best ? best.p.label : "—"} | ${ratio === undefined ? "—" : ratio.toFixed(2)} | ${t?.text ?? ""} | ${met} |`,
    );
  }
  return lines;
}

function nbdRows(store: "s3" | "swift"): Row[] {
  const rgw = store === "s3";
  return [
    { title: "sequential write incl. FLUSH (MiB/s)", pick: (s) => s.seqWrite, target: rgw ? { min: 100, ratio: 2.5, text: "≥100 and ≥2.5× best peer" } : { min: 50, ratio: 5, text: "≥50 and ≥5× swiftnbd" } },
    { title: "sequential read, fresh process (MiB/s)", pick: (s) => s.seqRead, target: rgw ? { min: 100, text: "≥100" } : { min: 50, text: "≥50" } },
    { title: "4 KiB random read QD32, fresh process (IOPS)", pick: (s) => s.randRead, target: rgw ? { min: 2000, text: "≥2,000 (cold)" } : { min: 500, text: "≥500 (cold)" } },
    { title: "4 KiB random write QD32, FLUSH about each 1 s (IOPS)", pick: (s) => s.randWrite, target: rgw ? { min: 10_000, text: "≥10,000" } : { min: 5000, text: "≥5,000" } },
    { title: "sequential read after the random writes, fresh process (MiB/s)", pick: (s) => s.fragRead },
    { title: "objects written per GiB, sequential into an empty volume (listing)", pick: (s) => s.objectsPerGiB, lower: true, target: { max: 130, text: "≤130" } },
    ...(rgw ? [{ title: "PUTs per GiB, sequential (radosgw's log)", pick: (s: Sample) => s.putsPerGiB, lower: true, target: { max: 130, text: "≤130" } }] : []),
  ];
}

function detailLines(subjects: Subject[], samples: Map<string, Sample[]>): string[] {
  return subjects.map((s) => {
    const xs = samples.get(s.key) ?? [];
    const m = (pick: (x: Sample) => number | undefined) => {
      const v = xs.map(pick).filter((x): x is number => x !== undefined);
      return v.length ? median(v) : undefined;
    };
    const every = m((x) => x.flushEvery);
    const iops = m((x) => x.randWrite);
    const drain = m((x) => x.drain);
    const parts = [`${s.label}: ${sizeName(s.bytes)} sequential and random region`];
    if (iops !== undefined && every !== undefined) parts.push(`random writes ${s.writeSeconds} s, fio --fsync=${every} (a FLUSH burst about every ${(every / iops).toFixed(every / iops < 0.1 ? 3 : 1)} s)`);
    if (drain !== undefined && drain > 0.05) parts.push(`${drain.toFixed(1)} s after fio until its cache held nothing dirty (counted in its IOPS)`);
    return `- ${parts.join("; ")}.`;
  });
}

function cowTable(rowsOf: CowRow[], limitMs: number, peers: string): string[] {
  const ms = (x: number) => (x * 1000).toFixed(1);
  const small = rowsOf[0];
  const big = rowsOf[rowsOf.length - 1];
  const lines = [
    `| operation | ${rowsOf.map((r) => `${r.sizeGiB} GiB, half written (ms)`).join(" | ")} | ${big.sizeGiB} GiB / ${small.sizeGiB} GiB | target | peers |`,
    `|---|${rowsOf.map(() => "---").join("|")}|---|---|---|`,
  ];
  for (const op of ["snapshot", "clone", "extend"] as const) {
    const worst = Math.max(...rowsOf.map((r) => r[op]));
    lines.push(`| ${op} | ${rowsOf.map((r) => ms(r[op])).join(" | ")} | ${(big[op] / small[op]).toFixed(2)} | ≤${limitMs} ms: ${worst * 1000 <= limitMs ? "met" : "not met"} | ${peers} |`);
  }
  return lines;
}

// ---- main

let workDir = "";

async function main(): Promise<void> {
  const started = Date.now();
  const load = loadavg()[0];
  workDir = mkdtempSync(join(base, "kindling-object-bench-"));
  mkdirSync(join(workDir, "cache"), { recursive: true });
  // Half of the largest volume, three runs of each server's data, room to spare: bluestore stops
  // at its full ratio and radosgw then hangs.
  const dataGiB = (parts.has("s3-cow") ? Math.max(...cowSizes) / 2 : 0) + (3 * 4 * seqBytes) / GiB;
  const osdGiB = Math.max(40, Math.ceil(dataGiB * 1.4));
  const { bavail, bsize } = statfsSync(workDir);
  const free = (bavail * bsize) / GiB;
  const want = osdGiB * 0.8 + (parts.has("swift-cow") ? Math.max(...swiftCowSizes) / 2 : 0) + 3;
  if (free < want) {
    rmSync(workDir, { recursive: true, force: true });
    throw new Error(`${base} has ${free.toFixed(1)} GiB free; this run may write up to ${want.toFixed(0)} GiB (set KINDLING_BENCH_DIR, KINDLING_BENCH_SIZES or KINDLING_BENCH_PARTS)`);
  }

  let cluster: CephCluster | undefined;
  let aio: SwiftAio | undefined;
  const cleanup = () => {
    for (const p of running) p.child.kill("SIGKILL");
    for (const d of daemons) d.child.kill("SIGKILL");
    for (const m of mounts) spawnSync("umount", ["-l", m]);
    if (cluster) {
      cluster.stop();
      removeDir(dirname(cluster.dir));
    }
    aio?.stop();
    rmSync(workDir, { recursive: true, force: true });
  };
  const interrupted = (signal: NodeJS.Signals) => {
    cleanup();
    process.exit(signal === "SIGINT" ? 130 : 143);
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);

  const out: string[] = [];
  try {
    for (const bytes of new Set([seqBytes, smallBytes, swiftnbdBytes])) source(workDir, bytes);

    if (parts.has("s3") || parts.has("s3-cow") || parts.has("s3-store")) {
      cluster = await CephCluster.start([], { rgw: true, env: { CEPH_OSD_SIZE_GIB: String(osdGiB) } });
      const access = cluster.rgw as NonNullable<CephCluster["rgw"]>;
      const secretFile = join(workDir, "rgw.secret");
      writeFileSync(secretFile, `${access.secretKey}\n`, { mode: 0o600 });
      const rgw: RgwSetup = { dir: workDir, endpoint: access.endpoint, accessKey: access.accessKey, secretKey: access.secretKey, rgwLog: join(cluster.dir, "log", "client.rgw.kindling.log") };
      const bucketStore = (bucket: string) => new S3Store({ endpoint: access.endpoint, bucket, region: "us-east-1", accessKey: access.accessKey, secretKey: access.secretKey, timeoutMs: 30_000 });
      const backendFor = (bucket: string) => ({ driver: "object", api: "s3", endpoint: access.endpoint, bucket, accessKey: access.accessKey, secretKeyFile: secretFile, cacheDir: join(workDir, "cache", bucket) });
      const stores = Object.fromEntries(["kindling-bench", "nbdkit-bench", "s3backer-bench", "kindling-cow", "ceiling"].map((b) => [b, bucketStore(b)]));
      for (const s of Object.values(stores)) await s.createContainer();

      if (parts.has("s3-store")) {
        out.push("", `radosgw S3, the store itself in the same run (1 GiB each way); median of ${runs}.`, "", ...storeTable(await storeCeiling(stores.ceiling, "radosgw")));
      }

      if (parts.has("s3")) {
        const subjects: Subject[] = [kindlingSubject({ key: "kindling-s3", writeSeconds, dir: workDir, backend: backendFor("kindling-bench"), store: stores["kindling-bench"], rgwLog: rgw.rgwLog, bucket: "kindling-bench" })];
        if (wanted.has("nbdkit-64k")) subjects.push(nbdkitSubject(rgw, stores["nbdkit-bench"], "nbdkit-bench", 64 * 1024));
        if (wanted.has("nbdkit-1m")) subjects.push(nbdkitSubject(rgw, stores["nbdkit-bench"], "nbdkit-bench", MiB));
        if (wanted.has("s3backer-64k")) subjects.push(s3backerSubject(rgw, stores["s3backer-bench"], "s3backer-bench", 64 * 1024));
        if (wanted.has("s3backer-1m")) subjects.push(s3backerSubject(rgw, stores["s3backer-bench"], "s3backer-bench", MiB));
        const samples = await measureAll(subjects);
        out.push(
          "",
          `radosgw S3 (Ceph 16.2, one OSD); NBD clients: nbdcopy (libnbd 1.14), fio 3.33 nbd engine; median of ${runs}.`,
          "",
          ...nbdTable(subjects, samples, nbdRows("s3")),
          "",
          ...detailLines(subjects, samples),
        );
      }
      if (parts.has("s3-cow")) {
        const cow = await copyOnWrite(backendFor("kindling-cow"), workDir, "radosgw", cowSizes);
        out.push(
          "",
          `Snapshot, clone and extend through the library on radosgw (volumes half written first: ${cow.map((r) => `${r.sizeGiB / 2} GiB at ${r.fillMiBs.toFixed(0)} MiB/s`).join(", ")}); extend is by 100 GiB each time; median of ${opRuns}.`,
          "",
          ...cowTable(cow, 100, "none: nbdkit S3 and s3backer have no snapshots or clones"),
        );
      }
      cluster.stop();
      removeDir(dirname(cluster.dir));
      cluster = undefined;
    }

    if (parts.has("swift") || parts.has("swift-cow") || parts.has("swift-store")) {
      aio = await SwiftAio.start();
      const keyFile = join(workDir, "swift.key");
      writeFileSync(keyFile, `${aio.key}\n`, { mode: 0o600 });
      const containerStore = (container: string) => new SwiftStore({ authUrl: aio?.authUrl, user: aio?.user, key: aio?.key, container, timeoutMs: 30_000 });
      const backendFor = (container: string) => ({ driver: "object", api: "swift", authUrl: aio?.authUrl, user: aio?.user, keyFile, container, cacheDir: join(workDir, "cache", container) });
      const stores = Object.fromEntries(["kindling-bench", "kindling-cow", "swiftnbd", "ceiling"].map((c) => [c, containerStore(c)]));
      for (const [name, s] of Object.entries(stores)) if (name !== "swiftnbd") await s.createContainer();

      if (parts.has("swift-store")) {
        out.push("", `Swift all-in-one, the store itself in the same run (1 GiB each way); median of ${runs}.`, "", ...storeTable(await storeCeiling(stores.ceiling, "swift")));
      }

      if (parts.has("swift")) {
        const subjects: Subject[] = [kindlingSubject({ key: "kindling-swift", writeSeconds: swiftWriteSeconds, dir: workDir, backend: backendFor("kindling-bench"), store: stores["kindling-bench"] })];
        let shipped: string | undefined;
        if (wanted.has("swiftnbd")) {
          shipped = swiftnbdAsShipped(workDir);
          subjects.push(swiftnbdSubject(workDir, aio, stores.swiftnbd, "swiftnbd"));
        }
        const samples = await measureAll(subjects);
        out.push(
          "",
          `Swift all-in-one (swift 2.30, one replica, each server one process); median of ${runs}.`,
          "",
          ...nbdTable(subjects, samples, nbdRows("swift")),
          "",
          ...detailLines(subjects, samples),
        );
        if (wanted.has("swiftnbd")) {
          out.push(`- swiftnbd 0.11 as shipped on Python ${run(PYTHON, ["-c", "import sys; print(sys.version.split()[0])"]).trim()}: ${shipped ?? "it starts"}; measured with server.py ported, nothing else changed: \`import types\`, \`@asyncio.coroutine\` → \`@types.coroutine\` (3 places), \`asyncio.async\` → \`asyncio.ensure_future\`, no \`loop=\` to \`start_server\`.`);
        }
      }
      if (parts.has("swift-cow")) {
        const cow = await copyOnWrite(backendFor("kindling-cow"), workDir, "swift", swiftCowSizes);
        out.push(
          "",
          `Snapshot, clone and extend through the library on Swift (half written first: ${cow.map((r) => `${r.sizeGiB / 2} GiB at ${r.fillMiBs.toFixed(0)} MiB/s`).join(", ")}); median of ${opRuns}.`,
          "",
          ...cowTable(cow, 300, "none: swiftnbd has no snapshots or clones"),
        );
      }
    }
  } finally {
    process.removeListener("SIGINT", interrupted);
    process.removeListener("SIGTERM", interrupted);
    cleanup();
  }

  const header = `Machine: ${cpus().length} cores, ${Math.round(totalmem() / GiB)} GiB, Linux ${release().split("-")[0]}; ${new Date().toISOString().slice(0, 10)}; load ${load.toFixed(1)} at start, ${loads.length ? `${(loads.reduce((a, b) => a + b, 0) / loads.length).toFixed(1)} on average and ${Math.max(...loads).toFixed(1)} at most after a row` : "no row run"}; ${Math.round((Date.now() - started) / 1000)} s in all.`;
  const table = [header, ...out].join("\n");
  process.stdout.write(`${table}\n`);
  mkdirSync(join(ROOT, "bench", "results"), { recursive: true });
  writeFileSync(join(ROOT, "bench", "results", "object.md"), `${table}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
