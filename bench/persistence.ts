// What each records store costs: volumes created and deleted through the library (file
// backend) with their records in SQLite beside the data, in PostgreSQL and in MariaDB
// (throwaway servers on 127.0.0.1 from test/helpers/databases.ts), and in memory as the floor
// (the library with no store to wait for). Per store and run: create 1,000 volumes, update
// each one's metadata (one change under a lease: its latency, p50 and p99), delete them; then
// the store's own calls alone, 1,000 inserts and deletes of a record. A delete looks for loop
// devices left over the volume's file (`losetup --list`); the time in that search is measured,
// so the rate without it can be told. Stores alternate within each run, starting one further
// on each run and going backwards on every other, so that whatever else the machine does (and
// whatever one store leaves behind for the next) weighs on all alike. CPU time is taken
// apart: kindling's process, the server's processes, and the commands kindling ran (losetup).
// Medians of 3.
//   KINDLING_BENCH_COUNT=1000  KINDLING_BENCH_RUNS=3
//   KINDLING_BENCH_DURABLE=0 leaves out the servers that flush every commit (as production does),
//   KINDLING_BENCH_DURABLE=only leaves out the others
//   KINDLING_BENCH_STORES=memory,sqlite,postgres,mariadb (fewer, to profile one)
import { execFileSync } from "node:child_process";
import { closeSync, fdatasyncSync, mkdirSync, openSync, readFileSync, writeFileSync, writeSync } from "node:fs";
import { cpus, release, totalmem } from "node:os";
import { join } from "node:path";
import * as loop from "../provider/attach/loop";
import { Backend, type Volume } from "../provider/library";
import { openPersistence, type PersistenceConfig } from "../provider/persistence";
import type { Persistence } from "../provider/persistence/contract";
import type { VolumeRecord } from "../provider/persistence/records";
import { GiB } from "../provider/util/sizes";
import { DatabaseServer, databasesMissing, type DatabaseKind } from "../test/helpers/databases";
import { removeDir, tempDir } from "../test/helpers/env";

const count = Number(process.env.KINDLING_BENCH_COUNT ?? 1000);
const runs = Number(process.env.KINDLING_BENCH_RUNS ?? 3);
const durable = process.env.KINDLING_BENCH_DURABLE ?? "1";
const kinds = new Set((process.env.KINDLING_BENCH_STORES ?? "memory,sqlite,postgres,mariadb").split(","));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
/** Nearest-rank percentile. */
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.max(0, Math.ceil(p * xs.length) - 1)];
const TICKS = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }));

interface Store {
  label: string;
  server?: DatabaseServer;
  /** The `persistence` entry a user would write for this store; `pool` is the run's pool directory. */
  config: (pool: string) => PersistenceConfig;
}

// ---- time and CPU -------------------------------------------------------------------------

/** utime + stime (and the same for waited-for children) of a process, in ms; 0 once it is gone. */
function processCpu(pid: number | "self"): { own: number; children: number } {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
    return { own: ((f[11] + f[12]) * 1000) / TICKS, children: ((f[13] + f[14]) * 1000) / TICKS };
  } catch {
    return { own: 0, children: 0 };
  }
}

interface Cost {
  wall: number;
  /** kindling's own process. */
  client: number;
  /** The database server's processes (none for SQLite and memory: they run in kindling's). */
  server: number;
  /** Commands kindling ran and waited for (losetup). */
  commands: number;
}

/** CPU of the server's processes now, by pid, so processes that start during a measurement count from zero. */
function serverCpu(server: DatabaseServer | undefined): Map<number, number> {
  return new Map((server?.processes() ?? []).map((pid) => [pid, processCpu(pid).own]));
}

/** Runs `work` and says what it cost in wall time and in CPU, where. */
async function costOf(server: DatabaseServer | undefined, work: () => Promise<void>): Promise<Cost> {
  const serverBefore = serverCpu(server);
  const childrenBefore = processCpu("self").children;
  const clientBefore = process.cpuUsage();
  const start = process.hrtime.bigint();
  await work();
  const wall = Number(process.hrtime.bigint() - start) / 1e6;
  const clientUsage = process.cpuUsage(clientBefore);
  let serverMs = 0;
  for (const [pid, ms] of serverCpu(server)) serverMs += ms - (serverBefore.get(pid) ?? 0);
  return { wall, client: (clientUsage.user + clientUsage.system) / 1000, server: serverMs, commands: processCpu("self").children - childrenBefore };
}

// ---- what the library asks of the store, and what losetup costs -----------------------------

/** The store's calls, counted: writes (compare-and-sets, sets, deletes) and reads (gets). */
function counting(store: Persistence): { store: Persistence; writes: () => number; reads: () => number } {
  let writes = 0;
  let reads = 0;
  const proxy = new Proxy(store, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (typeof value !== "function") return value;
      const name = String(property);
      const write = /^(compareAnd|set|delete)/.test(name);
      const read = name.startsWith("get");
      return (...args: unknown[]) => {
        if (write) writes++;
        if (read) reads++;
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store: proxy, writes: () => writes, reads: () => reads };
}

/**
 * The time a delete spends looking for leftover loop devices (`loopsBacking`: an lstat and one
 * `losetup --list`), measured around the real function where the library calls it. The library
 * reaches it through the compiled CommonJS module's exports object at each call, so the timing
 * put there is what every delete runs through; a delete that never comes to it fails the run.
 */
const losetup = { ms: 0, calls: 0 };
{
  const module = loop as unknown as { loopsBacking: typeof loop.loopsBacking };
  const real = module.loopsBacking;
  module.loopsBacking = async (file: string) => {
    const start = process.hrtime.bigint();
    try {
      return await real(file);
    } finally {
      losetup.ms += Number(process.hrtime.bigint() - start) / 1e6;
      losetup.calls++;
    }
  };
}

// ---- one run of one store -----------------------------------------------------------------

interface Sample {
  create: Cost;
  delete: Cost;
  losetupMs: number;
  losetupCalls: number;
  writes: { create: number; update: number; delete: number };
  reads: { create: number; update: number; delete: number };
  updateP50: number;
  updateP99: number;
  /** The store's own insert + delete of `count` records. */
  records: Cost;
  /** One read of a record by id (as the library asks: backend and id), ms. */
  readMs: number;
  /** kindling's resident memory after the deletes, MiB: what a process start (fork) has to copy the page tables of. */
  rssMiB: number;
}

/** A volume record as the library writes one, for the store-only part. */
function volumeRecord(i: number): VolumeRecord {
  const at = new Date().toISOString();
  return {
    class: "Volume", id: `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`, name: `r${i}`, description: "", backend: "bench-records",
    pool: "default", sizeGiB: 1, status: "available", extraSpecs: {}, qosSpecs: {}, metadata: {}, createdAt: at, updatedAt: at, version: 1,
  };
}

async function once(entry: Store, dir: string): Promise<Sample> {
  const pool = join(dir, "volumes");
  const opened = await openPersistence(entry.config(pool));
  const { store, writes, reads } = counting(opened);
  const backend = await Backend.open({ name: "bench", driver: "file", path: pool }, { persistence: store });
  try {
    const volumes: Volume[] = [];
    const calls = () => ({ w: writes(), r: reads() });

    const before = calls();
    const create = await costOf(entry.server, async () => {
      for (let i = 0; i < count; i++) volumes.push(await backend.createVolume({ sizeGiB: 1, name: `v${i}` }));
    });
    const created = calls();

    const latencies: number[] = [];
    for (let i = 0; i < count; i++) {
      const start = process.hrtime.bigint();
      await volumes[i].update({ metadata: { n: String(i) } });
      latencies.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
    const updated = calls();

    losetup.ms = 0;
    losetup.calls = 0;
    const del = await costOf(entry.server, async () => {
      for (const volume of volumes) await volume.delete();
    });
    const deleted = calls();
    if (losetup.calls === 0) throw new Error("no delete looked for loop devices: the timing around loopsBacking did not take, or deletes no longer call it");
    const rssMiB = process.memoryUsage().rss / 2 ** 20;
    const losetupMs = losetup.ms;
    const losetupCalls = losetup.calls;

    const records = await costOf(entry.server, async () => {
      for (let i = 0; i < count; i++) {
        const record = volumeRecord(i);
        if (!(await opened.compareAndSetRecord("volume", record, 0))) throw new Error(`${entry.label}: insert of ${record.id} refused`);
        if (!(await opened.compareAndDeleteRecord("volume", record.id, 1))) throw new Error(`${entry.label}: delete of ${record.id} refused`);
      }
    });

    // One record read `count` times: the cost of a read, one query by primary key.
    const kept = volumeRecord(count);
    if (!(await opened.compareAndSetRecord("volume", kept, 0))) throw new Error(`${entry.label}: insert of ${kept.id} refused`);
    const reads0 = process.hrtime.bigint();
    for (let i = 0; i < count; i++) if ((await opened.getVolumes({ backend: kept.backend, id: kept.id })).length !== 1) throw new Error(`${entry.label}: read of ${kept.id} found nothing`);
    const readMs = Number(process.hrtime.bigint() - reads0) / 1e6 / count;
    await opened.compareAndDeleteRecord("volume", kept.id, 1);

    const per = (a: number, b: number) => (b - a) / count;
    return {
      create,
      delete: del,
      losetupMs,
      losetupCalls,
      writes: { create: per(before.w, created.w), update: per(created.w, updated.w), delete: per(updated.w, deleted.w) },
      reads: { create: per(before.r, created.r), update: per(created.r, updated.r), delete: per(updated.r, deleted.r) },
      updateP50: percentile(latencies, 0.5),
      updateP99: percentile(latencies, 0.99),
      records,
      readMs,
      rssMiB,
    };
  } finally {
    await backend.close();
    await opened.close();
  }
}

/** Milliseconds of an 8 KiB write + fdatasync in `dir` (where the servers and SQLite keep their files), p50 of 200. */
function flushMs(dir: string): number {
  const fd = openSync(join(dir, "flush"), "w", 0o600);
  try {
    const block = Buffer.alloc(8192, 1);
    const times: number[] = [];
    for (let i = 0; i < 200; i++) {
      const start = process.hrtime.bigint();
      writeSync(fd, block, 0, block.length, 0);
      fdatasyncSync(fd);
      times.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
    return percentile(times, 0.5);
  } finally {
    closeSync(fd);
  }
}

// ---- all of it ----------------------------------------------------------------------------

async function main(): Promise<void> {
  const missing = (kinds.has("postgres") && databasesMissing("postgres")) || (kinds.has("mariadb") && databasesMissing("mysql"));
  if (missing) throw new Error(missing);
  const servers: DatabaseServer[] = [];
  const start = async (kind: DatabaseKind, opts: { durable?: boolean } = {}) => {
    const server = await DatabaseServer.start(kind, opts);
    servers.push(server);
    return server;
  };
  const stores: Store[] = [];
  if (kinds.has("memory")) stores.push({ label: "memory (no store: the floor)", config: () => ({ storage: "memory" }) });
  if (kinds.has("sqlite")) stores.push({ label: "sqlite (WAL, synchronous=NORMAL)", config: (pool) => ({ storage: "sqlite", path: join(pool, ".kindling", "kindling.db") }) });
  const began = Date.now();
  try {
    const serve = async (kind: DatabaseKind, name: string, label: string, durableLabel: string) => {
      if (!kinds.has(name)) return;
      if (durable !== "only") {
        const fast = await start(kind);
        stores.push({ label: `${name} (${label})`, server: fast, config: () => fast.persistence() });
      }
      if (durable === "0") return;
      const flushing = await start(kind, { durable: true });
      stores.push({ label: `${name}, durable (${durableLabel})`, server: flushing, config: () => flushing.persistence() });
    };
    await serve("postgres", "postgres", "synchronous_commit=off", "synchronous_commit=on");
    await serve("mysql", "mariadb", "flush_log_at_trx_commit=2", "flush_log_at_trx_commit=1");

    const samples: Sample[][] = stores.map(() => []);
    const flushes: number[] = [];
    for (let run = 0; run < runs; run++) {
      const scratch = tempDir("kindling-bench-flush-");
      try {
        flushes.push(flushMs(scratch));
      } finally {
        removeDir(scratch);
      }
      for (let k = 0; k < stores.length; k++) {
        // One further on each run, and backwards on every other one, so no store always follows the same one.
        const s = (run + (run % 2 ? stores.length - k : k)) % stores.length;
        const dir = tempDir("kindling-bench-persistence-");
        try {
          samples[s].push(await once(stores[s], dir));
        } finally {
          removeDir(dir);
        }
        const x = samples[s][samples[s].length - 1];
        process.stderr.write(
          `run ${run + 1}/${runs}, ${stores[s].label}: create ${(x.create.wall / count).toFixed(2)} ms, delete ${(x.delete.wall / count).toFixed(2)} ms ` +
            `(loop devices ${(x.losetupMs / count).toFixed(2)}, RSS ${x.rssMiB.toFixed(0)} MiB), insert + delete ${(x.records.wall / count).toFixed(3)} ms, read ${x.readMs.toFixed(3)} ms, ` +
            `update p50 ${x.updateP50.toFixed(2)} p99 ${x.updateP99.toFixed(2)} ms\n`,
        );
      }
    }

    const m = (xs: Sample[], f: (x: Sample) => number) => median(xs.map(f));
    const fixed = (x: number, digits: number) => x.toFixed(digits);
    const lines = [
      `Machine: ${cpus().length} cores, ${Math.round(totalmem() / GiB)} GiB, Linux ${release().split("-")[0]}; ${new Date().toISOString().slice(0, 10)}; ` +
        `${count} volumes one after another per store and run; median of ${runs}; ${Math.round((Date.now() - began) / 1000)} s in all. ` +
        `An 8 KiB write + fdatasync on the disk the stores use: ${median(flushes).toFixed(3)} ms (p50).`,
      "",
      "| store | create + delete (volumes/s) | create (ms) | delete (ms) | of which looking for loop devices (ms) | kindling's RSS (MiB) | without that (volumes/s) | store calls, create + delete: writes / reads | CPU per create + delete (ms): kindling / server / losetup |",
      "|---|---|---|---|---|---|---|---|---|",
    ];
    stores.forEach((store, i) => {
      const xs = samples[i];
      const createMs = m(xs, (x) => x.create.wall / count);
      const deleteMs = m(xs, (x) => x.delete.wall / count);
      const rate = m(xs, (x) => count / ((x.create.wall + x.delete.wall) / 1000));
      const withoutLosetup = m(xs, (x) => count / ((x.create.wall + x.delete.wall - x.losetupMs) / 1000));
      const losetupMs = m(xs, (x) => x.losetupMs / count);
      const w = xs[0].writes;
      const r = xs[0].reads;
      const cpu = (f: (c: Cost) => number) => fixed(m(xs, (x) => (f(x.create) + f(x.delete)) / count), 2);
      const server = store.server ? cpu((c) => c.server) : "—";
      lines.push(
        `| ${store.label} | ${fixed(rate, 0)} | ${fixed(createMs, 2)} | ${fixed(deleteMs, 2)} | ${fixed(losetupMs, 2)} | ${fixed(m(xs, (x) => x.rssMiB), 0)} | ${fixed(withoutLosetup, 0)} | ` +
          `${w.create} + ${w.delete} / ${r.create} + ${r.delete} | ${cpu((c) => c.client)} / ${server} / ${cpu((c) => c.commands)} |`,
      );
    });
    lines.push(
      "",
      "| store | records only: insert + delete (records/s) | per insert + delete (ms) | CPU per insert + delete (ms): kindling / server | one read by id (ms) | update metadata p50 (ms) | p99 (ms) | store calls per update: writes / reads |",
      "|---|---|---|---|---|---|---|---|",
    );
    stores.forEach((store, i) => {
      const xs = samples[i];
      const rate = m(xs, (x) => count / (x.records.wall / 1000));
      const perPair = m(xs, (x) => x.records.wall / count);
      const client = fixed(m(xs, (x) => x.records.client / count), 3);
      const server = store.server ? fixed(m(xs, (x) => x.records.server / count), 3) : "—";
      lines.push(
        `| ${store.label} | ${fixed(rate, 0)} | ${fixed(perPair, 3)} | ${client} / ${server} | ${fixed(m(xs, (x) => x.readMs), 3)} | ${fixed(m(xs, (x) => x.updateP50), 2)} | ${fixed(m(xs, (x) => x.updateP99), 2)} | ` +
          `${xs[0].writes.update} / ${xs[0].reads.update} |`,
      );
    });
    const calls = samples[0][0];
    lines.push("", `Each delete looked for loop devices ${calls.losetupCalls / count} time(s).`);
    const table = lines.join("\n");
    process.stdout.write(`${table}\n`);
    mkdirSync(join(__dirname, "..", "..", "bench", "results"), { recursive: true });
    writeFileSync(join(__dirname, "..", "..", "bench", "results", "persistence.md"), `${table}\n`);
  } finally {
    for (const server of servers) await server.stop().catch((err) => console.error(`could not stop the ${server.kind} server: ${err}`));
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
