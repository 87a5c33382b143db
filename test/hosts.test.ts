// Many hosts, one truth: the guarantees of "Many processes, one truth" between hosts that share
// their storage (one pool directory, one Ceph pool) and their records (a PostgreSQL or MariaDB
// server). Each host is a UTS namespace with a host name of its own and its own runtime
// directory, so what a host holds (leases, writer locks) names that host, and the others judge
// it by its heartbeat, as they would a remote machine's.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test, type TestContext } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Backend } from "../provider/library";
import { writerLockKey } from "../provider/library/export-claims";
import { openPersistence } from "../provider/persistence";
import { GiB, MiB } from "../provider/util/sizes";
import { CephCluster, needsCeph } from "./helpers/ceph";
import { recordsVersusStorage } from "./helpers/consistency";
import { freePort } from "./helpers/daemon";
import { DatabaseServer, needsDatabases, type DatabaseKind } from "./helpers/databases";
import { allocatedBytes, removeDir, tempDir, writeDevice } from "./helpers/env";
import { makeFilesystem, type LoopFilesystem } from "./helpers/filesystems";
import { Host, PYTHON, needsHosts, runPhases, serverPersistence, startWorker, type HostDaemon, type Outcome, type Step, type Worker } from "./helpers/hosts";
import { ledgerProblems } from "./helpers/ledger";
import { Project } from "./helpers/pulumi";
import { rbdRecordsVersusStorage } from "./helpers/rbd-consistency";

const root = tempDir("kindling-hosts-");
const servers: Partial<Record<DatabaseKind, DatabaseServer>> = {};
/** The server of `kind`, started once for the file: each test keeps to a backend name of its own. */
async function server(kind: DatabaseKind): Promise<DatabaseServer> {
  servers[kind] ??= await DatabaseServer.start(kind);
  return servers[kind];
}
after(async () => {
  for (const s of Object.values(servers)) await s?.stop();
  removeDir(root);
});

const COUNT = 20;
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/**
 * What each host does, in three phases that start on both hosts at once, on the same names:
 * 20 creates (v0..v19: each name made once, the other host told it is taken); 20 snapshots and
 * 20 clones of those volumes (s<i>, c<i>: the same, and snapshot and clone of one volume take
 * turns on its lease); then 25 extends and 25 deletes: both hosts grow the odd volumes and the
 * odd clones (one to 2 GiB, the other to 3), both delete the even volumes with their snapshots,
 * and each even clone is grown by one host while the other deletes it.
 */
function collidingPlan(host: "a" | "b"): Step[][][] {
  const target = host === "a" ? 2 : 3;
  const create = range(COUNT).map((i): Step[] => [{ op: "create", name: `v${i}`, sizeGiB: 1 }]);
  const copies = range(COUNT).flatMap((i): Step[][] => [[{ op: "snapshot", volume: `v${i}`, name: `s${i}` }], [{ op: "clone", volume: `v${i}`, name: `c${i}` }]]);
  const change = range(COUNT).flatMap((i): Step[][] => {
    if (i % 2 === 1) return [[{ op: "extend", volume: `v${i}`, sizeGiB: target }], [{ op: "extend", volume: `c${i}`, sizeGiB: target }]];
    const mine = (i % 4 === 0) === (host === "a");
    return [
      [{ op: "delete-snapshot", name: `s${i}` }, { op: "delete-volume", name: `v${i}` }],
      [mine ? { op: "extend", volume: `c${i}`, sizeGiB: target } : { op: "delete-volume", name: `c${i}` }],
    ];
  });
  return [create, copies, change];
}

/** Counts of outcomes, as `op ok|CODE` → n, for messages. */
function tally(outcomes: Outcome[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const o of outcomes) {
    const key = `${o.op} ${o.ok ? "ok" : o.code}`;
    out[key] = (out[key] ?? 0) + 1;
  }
  return out;
}

/** Runs the colliding plan on two hosts against `config`; returns every outcome. */
async function collide(t: TestContext, dir: string, config: Record<string, unknown>): Promise<Outcome[]> {
  const hosts = [new Host("kindling-host-a", dir), new Host("kindling-host-b", dir)];
  const outcomes = await runPhases(join(dir, "exchange"), [
    { host: hosts[0], backend: config, phases: collidingPlan("a") },
    { host: hosts[1], backend: config, phases: collidingPlan("b") },
  ]);
  t.diagnostic(`host a: ${JSON.stringify(tally(outcomes[0].flat()))}`);
  t.diagnostic(`host b: ${JSON.stringify(tally(outcomes[1].flat()))}`);
  return outcomes.flat(2);
}

/** What the colliding plan must leave, whatever the order the hosts' steps met in. */
async function assertCollisionsSettled(backend: Backend, all: Outcome[], storage: () => Promise<string[]>): Promise<void> {
  const volumes = await backend.persistence.getVolumes({ backend: backend.name });
  const snapshots = await backend.persistence.getSnapshots({ backend: backend.name });
  // Both lists at once: a lost volume often shows in both, and together they say why.
  assert.deepEqual({ ledger: ledgerProblems(all, { volumes, snapshots }), storage: await storage() }, { ledger: [], storage: [] });
  // Each name made once: the other host's attempt was refused, the name taken.
  for (const op of ["create", "snapshot", "clone"]) {
    assert.equal(all.filter((o) => o.op === op && o.ok).length, COUNT, `${op}: one success per name`);
    assert.equal(all.filter((o) => o.op === op && !o.ok).length, COUNT, `${op}: one refusal per name`);
  }
  // What is left: the odd volumes and clones at 3 GiB (both extends ran, 2 then 3, or the 3 GiB
  // one alone), and the odd volumes' snapshots.
  assert.deepEqual(volumes.map((v) => v.name).sort(), range(COUNT).filter((i) => i % 2).flatMap((i) => [`c${i}`, `v${i}`]).sort());
  assert.ok(volumes.every((v) => v.sizeGiB === 3 && v.status === "available"), JSON.stringify(volumes.map((v) => [v.name, v.sizeGiB, v.status])));
  assert.deepEqual(snapshots.map((s) => s.name).sort(), range(COUNT).filter((i) => i % 2).map((i) => `s${i}`).sort());
}

for (const kind of ["postgres", "mysql"] as const) {
  describe(`two hosts on one file pool, records in ${kind === "postgres" ? "PostgreSQL" : "MariaDB"}`, () => {
    test("20 concurrent creates, snapshots, clones, extends and deletes on each host, on the same names: nothing duplicated, nothing lost, records equal the files", async (t) => {
      if (needsHosts(t) || needsDatabases(t, kind)) return;
      const dir = join(root, `file-${kind}`);
      const pool = join(dir, "shared-pool");
      const config = { name: `shared-${kind}`, driver: "file", path: pool, persistence: serverPersistence(await server(kind)) };
      const all = await collide(t, dir, config);
      const backend = await Backend.open(config as never);
      try {
        await assertCollisionsSettled(backend, all, () => recordsVersusStorage(backend, pool));
      } finally {
        await backend.close();
      }
    });
  });
}

describe("two hosts on one Ceph pool, records in PostgreSQL", () => {
  let cluster: CephCluster | undefined;
  after(() => cluster?.stop());

  test("20 concurrent creates, snapshots, clones, extends and deletes on each host, on the same names: every record matches an image or an RBD snapshot, nothing duplicated or lost", async (t) => {
    if (needsHosts(t) || needsDatabases(t, "postgres") || needsCeph(t)) return;
    cluster = await CephCluster.start();
    const dir = join(root, "rbd");
    const config = cluster.backend("shared-rbd", { persistence: serverPersistence(await server("postgres")) });
    const all = await collide(t, dir, config);
    const backend = await Backend.open(config as never);
    try {
      await assertCollisionsSettled(backend, all, () => rbdRecordsVersusStorage(backend, cluster as CephCluster));
    } finally {
      await backend.close();
    }
  });
});

/** Polls until `check` holds, failing with `what` after 30 s. */
async function until(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await check()) return;
    await sleep(100);
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** The exports a daemon lists, as nbdinfo prints them. */
function exportsOf(uri: string): string {
  const r = spawnSync("nbdinfo", ["--list", uri], { encoding: "utf8" });
  return (r.stdout ?? "") + (r.stderr ?? "");
}

/**
 * A libnbd client that writes 256 blocks of 4 KiB (block i filled with byte i % 251 + 1),
 * flushes and says so, then goes on writing blocks after them until its connection fails, and
 * reports how many it saw acknowledged.
 */
function writer(uri: string) {
  const script = `
import json, time, nbd
h = nbd.NBD()
h.connect_uri(${JSON.stringify(uri)})
acked, err, deadline = 0, None, time.time() + 120
try:
    while acked < (1 << 18) and time.time() < deadline:
        h.pwrite(bytes([acked % 251 + 1]) * 4096, acked * 4096)
        acked += 1
        if acked == 256:
            h.flush()
            print("flushed", flush=True)
except nbd.Error as e:
    err = str(e)
print(json.dumps({"acked": acked, "err": err}), flush=True)
`;
  const child = spawn(PYTHON, ["-c", script], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    flushed: () => until(() => out.includes("flushed") || child.exitCode !== null, "the client to write and flush").then(() => assert.ok(out.includes("flushed"), out)),
    result: async (): Promise<{ acked: number; err: string | null }> => {
      await exited;
      return JSON.parse(out.trim().split("\n").at(-1) as string);
    },
    kill: () => child.kill("SIGKILL"),
  };
}

/** Reads blocks 0..count-1 through `uri` and says which do not hold what the writer wrote; checks the export is writable. */
function verifyThrough(uri: string, count: number): { wrong: number[]; readOnly: boolean } {
  const script = `
import json, nbd
h = nbd.NBD()
h.connect_uri(${JSON.stringify(uri)})
wrong, at = [], 0
while at < ${count}:
    n = min(256, ${count} - at)
    data = h.pread(n * 4096, at * 4096)
    for i in range(n):
        if data[i * 4096:(i + 1) * 4096] != bytes([(at + i) % 251 + 1]) * 4096:
            wrong.append(at + i)
    at += n
print(json.dumps({"wrong": wrong[:20], "readOnly": bool(h.is_read_only())}))
`;
  const r = spawnSync(PYTHON, ["-c", script], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

describe("the NBD writer lock between two hosts, records in PostgreSQL", () => {
  const daemons: HostDaemon[] = [];
  after(async () => {
    for (const d of daemons) await d.stop("SIGKILL");
  });

  test("one host serves a volume read-write, the other refuses; after kill -9 of the first the other takes over and the client's data is there", async (t) => {
    if (needsHosts(t) || needsDatabases(t, "postgres")) return;
    if (spawnSync(PYTHON, ["-c", "import nbd"]).status !== 0 || spawnSync("nbdinfo", ["--version"]).status !== 0) {
      return t.skip("needs python3-libnbd and nbdinfo (libnbd-bin): a real NBD client");
    }
    const dir = join(root, "nbd");
    const pool = join(dir, "shared-pool");
    const persistence = serverPersistence(await server("postgres"));
    const [a, b] = [new Host("kindling-host-a", dir), new Host("kindling-host-b", dir)];
    // Each host has its own configuration file, naming the same pool and the same records.
    const configOf = (host: Host) => host.writeFile("kindling.json", JSON.stringify({ persistence, backends: { nbdshared: { driver: "file", path: pool } } }));
    const [configA, configB] = [configOf(a), configOf(b)];
    const cli = (host: Host, config: string, ...args: string[]) => {
      const r = host.kindling(["--config", config, "--json", ...args]);
      assert.equal(r.code, 0, r.stderr);
      return r.json();
    };
    const volume = cli(a, configA, "volume", "create", "served", "--size", "1");
    cli(a, configA, "connect", "served", "--protocol", "nbd");
    const records = await openPersistence(persistence);
    const lockHolder = async () => {
      const [lock] = await records.getKeyValues(writerLockKey(volume.id));
      return lock ? `${JSON.parse(lock.value).owner.host}:${JSON.parse(lock.value).owner.pid}` : undefined;
    };
    // Stale after 3 s: a lock of another host is judged by its heartbeat alone.
    const env = { KINDLING_NBD_LOCK_STALE_SECONDS: "3" };
    let client: ReturnType<typeof writer> | undefined;
    try {
      const first = await a.serveNbd(configA, await freePort(), env);
      daemons.push(first);
      await until(() => exportsOf(first.uri).includes('export="served"'), "host a to export the volume");
      const second = await b.serveNbd(configB, await freePort(), env);
      daemons.push(second);
      const refusals = () => second.logLines(/exported read-write by another server/);
      await until(() => refusals().length > 0, "host b to log that it cannot lock the volume");
      assert.equal(refusals()[0].holder, first.holder, "naming host a's server");
      assert.equal(refusals()[0].level, 40, "a warning");
      assert.equal(await lockHolder(), first.holder, "the lock in the records is host a's");
      assert.ok(!exportsOf(second.uri).includes('export="served"'), "host b does not export it");

      client = writer(`${first.uri}/served`);
      await client.flushed();
      // Host b still refuses while host a serves and renews its lock (several heartbeats).
      await sleep(4000);
      assert.ok(!exportsOf(second.uri).includes('export="served"'), "host b still does not export it while host a renews its lock");
      await first.stop("SIGKILL");
      const written = await client.result();
      assert.ok(written.err, `the client's writes failed with its server (${JSON.stringify(written)})`);
      assert.ok(written.acked >= 256, JSON.stringify(written));

      await until(() => exportsOf(second.uri).includes('export="served"'), "host b to take the stale lock over");
      // Its stderr is read between this test's steps: the export can show before the log line has been read.
      await until(() => second.logLines(/took the writer lock/).length > 0, "host b to say it took the lock");
      assert.equal(second.logLines(/took the writer lock/).length, 1, "and to say so once");
      assert.equal(await lockHolder(), second.holder, "the lock in the records is host b's now");
      const read = verifyThrough(`${second.uri}/served`, written.acked);
      assert.deepEqual(read, { wrong: [], readOnly: false }, `every block host a acknowledged (${written.acked}, the first 256 flushed) reads back through host b, read-write`);
    } finally {
      client?.kill();
      await records.close();
    }
  });
});

/** Leases of hosts that renew every half second and are taken over after 3 s without it. */
const SHORT_LEASES = { staleMs: 3000, heartbeatMs: 500 };

/**
 * Starts `steps` on `host` (one phase, started at once) and resolves with the worker, so the
 * caller can kill it mid-step.
 */
async function startSteps(host: Host, exchange: string, config: Record<string, unknown>, steps: Step[]): Promise<Worker> {
  mkdirSync(exchange, { recursive: true });
  const worker = startWorker(host, { backend: config, leases: SHORT_LEASES, exchange, phases: [[steps]] });
  await until(() => existsSync(join(exchange, `ready-${host.name}`)) || worker.child.exitCode !== null, `the worker on ${host.name} to open its backend`);
  writeFileSync(join(exchange, "go-0"), "");
  return worker;
}

/** Runs `phases` on `host` to their end; returns its outcomes, phase after phase. */
async function runSteps(host: Host, exchange: string, config: Record<string, unknown>, phases: Step[][]): Promise<Outcome[]> {
  const [outcomes] = await runPhases(exchange, [{ host, backend: config, leases: SHORT_LEASES, phases: phases.map((steps) => [steps]) }]);
  return outcomes.flat();
}

async function killed(worker: Worker): Promise<void> {
  worker.child.kill("SIGKILL");
  await worker.exited;
}

const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

describe("kill -9 on one host mid-operation, the next operation on another, records in PostgreSQL", () => {
  let fs: LoopFilesystem | undefined;
  after(() => fs?.remove());

  test("an extend with preallocation=full killed on host a is finished by the same extend on host b", async (t) => {
    if (needsHosts(t) || needsDatabases(t, "postgres")) return;
    const dir = join(root, "crash-extend");
    const pool = join(dir, "shared-pool");
    const config = { name: "crash-extend", driver: "file", path: pool, persistence: serverPersistence(await server("postgres")) };
    const backend = await Backend.open(config as never);
    try {
      await backend.createVolume({ name: "ex", sizeGiB: 1, extraSpecs: { preallocation: "full" } });
      const [a, b] = [new Host("kindling-host-a", dir), new Host("kindling-host-b", dir)];
      const extend: Step = { op: "extend", volume: "ex", sizeGiB: 4 };
      const worker = await startSteps(a, join(dir, "exchange-a"), config, [extend]);
      await until(async () => (await backend.getVolume("ex")).status === "extending" || worker.child.exitCode !== null, "host a's extend to start");
      await killed(worker);
      const stuck = await backend.getVolume("ex");
      assert.equal(stuck.status, "extending", "caught while writing 3 GiB of zeroes");
      assert.equal(stuck.busy?.by, `kindling-host-a:${worker.child.pid}`, "under host a's lease");

      // Host b cannot see whether host a's process runs: it takes the lease over once its heartbeat is stale.
      const [again] = await runSteps(b, join(dir, "exchange-b"), config, [[extend]]);
      assert.equal(again.ok, true, JSON.stringify(again));
      const volume = await backend.getVolume("ex");
      assert.equal(volume.sizeGiB, 4);
      assert.equal(volume.status, "available");
      assert.ok(allocatedBytes(volume.location as string) >= 4 * GiB, "the preallocation was completed too");
      assert.deepEqual(await recordsVersusStorage(backend, pool), []);
    } finally {
      await backend.close();
    }
  });

  test("a clone of a volume with data killed on host a is rolled back by host b's next operation; host b's clone then holds all the data", async (t) => {
    if (needsHosts(t) || needsDatabases(t, "postgres")) return;
    // ext4 has no reflink: the clone is a 1 GiB copy, long enough to be killed in.
    fs = makeFilesystem("ext4", 3072);
    const dir = join(root, "crash-clone");
    const pool = join(fs.mountpoint, "shared-pool");
    const config = { name: "crash-clone", driver: "file", path: pool, persistence: serverPersistence(await server("postgres")) };
    const backend = await Backend.open(config as never);
    try {
      const big = await backend.createVolume({ name: "big", sizeGiB: 1 });
      const chunk = Buffer.alloc(4 * MiB, 0x5a);
      for (let at = 0; at < GiB; at += chunk.length) writeDevice(big.location as string, chunk, at);
      const expected = sha256(big.location as string);
      const [a, b] = [new Host("kindling-host-a", dir), new Host("kindling-host-b", dir)];
      const worker = await startSteps(a, join(dir, "exchange-a"), config, [{ op: "clone", volume: "big", name: "bigc" }]);
      await until(async () => (await backend.volumes()).some((v) => v.name === "bigc" && v.status === "creating") || worker.child.exitCode !== null, "host a's clone to start");
      await killed(worker);
      const half = await backend.getVolume("bigc");
      assert.equal(half.status, "creating", "caught while copying");

      const outcomes = await runSteps(b, join(dir, "exchange-b"), config, [
        [{ op: "snapshot", volume: "bigc", name: "bigc-snap" }],
        [{ op: "clone", volume: "big", name: "bigc" }],
      ]);
      assert.deepEqual(outcomes.map((o) => [o.op, o.ok ? "ok" : o.code]), [["snapshot", "NOT_FOUND"], ["clone", "ok"]], JSON.stringify(outcomes));
      assert.equal(existsSync(join(pool, `volume-${half.id}`)), false, "the half copy went with the rollback");
      const clone = await backend.getVolume("bigc");
      assert.notEqual(clone.id, half.id);
      assert.equal(clone.status, "available");
      assert.equal(sha256(clone.location as string), expected, "host b's clone holds all of big's data");
      assert.deepEqual(await recordsVersusStorage(backend, pool), []);
    } finally {
      await backend.close();
    }
  });
});

/** Every file under `dir`, symlinks not followed (node_modules links to the whole project). */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

describe("a Pulumi program whose backend keeps its records in PostgreSQL", () => {
  let project: Project | undefined;
  after(() => {
    project?.run(["destroy", "--yes"]);
    if (project) removeDir(project.dir);
  });

  test("up records the volume in PostgreSQL, the password is in no state, export or output, destroy removes it", async (t) => {
    if (needsDatabases(t, "postgres")) return;
    const pg = await server("postgres");
    const pool = join(root, "pulumi", "volumes");
    // The password as a program would give it, in clear: the SDK makes it a secret.
    const config = { name: "pulumi-pg", driver: "file", path: pool, persistence: pg.persistence() };
    project = new Project(config);
    project.init();
    project.program([{ type: "Volume", name: "data", args: { sizeGiB: 1 } }]);
    project.up();
    const id = project.outputs().data.id;

    const backend = await Backend.open(config as never);
    try {
      const volume = await backend.getVolume(id);
      assert.match(volume.name, /^data-/, "the volume the stack made (Pulumi names it)");
      assert.equal(pg.admin(`SELECT count(*) FROM volumes WHERE backend = 'pulumi-pg' AND id = '${id}'`).trim(), "1", "its record is in the server");
      assert.equal(existsSync(join(pool, ".kindling")), false, "and not in a store beside the data");

      assert.ok(project.ok(["stack", "export", "--show-secrets"]).stdout.includes(pg.password), "the state holds the password (encrypted), so the searches below can find it");
      assert.ok(!project.ok(["stack", "export"]).stdout.includes(pg.password), "not in `pulumi stack export`");
      const leaking = [...filesUnder(project.state), ...filesUnder(project.env.PULUMI_HOME)].filter((file) => readFileSync(file).includes(pg.password));
      assert.deepEqual(leaking, [], "not in the state files or the engine's home");

      project.ok(["destroy", "--yes"]);
      assert.equal(pg.admin(`SELECT count(*) FROM volumes WHERE backend = 'pulumi-pg'`).trim(), "0", "destroy removed the record");
      assert.equal(existsSync(volume.location as string), false, "and the file");
      const printed = project.runs.filter((r) => `${r.stdout}${r.stderr}`.includes(pg.password)).map((r) => r.args.join(" "));
      assert.deepEqual(printed.filter((args) => !args.includes("--show-secrets")), [], "no engine run printed the password");
    } finally {
      await backend.close();
    }
  });
});
