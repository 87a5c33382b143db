// Crash safety, fencing and store faults of the object driver, with real processes and real
// stores: a writer of stamped blocks is killed with SIGKILL at random moments and at failpoints
// inside the commit, the checkpoint and the sweep of dead records; after every restart nothing a
// FLUSH acknowledged is lost and the volume is exactly the volume after some prefix of the writes.
// A paused writer whose lease ran out is fenced: its FLUSH fails and it commits nothing after
// the new writer's `open` record.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { Backend } from "../provider/library";
import { readHeader } from "../provider/drivers/object/log";
import type { RecordHeader } from "../provider/drivers/object/record";
import { removeDir } from "./helpers/env";
import { objectBackendConfig, startObjectStores, STORE_KINDS, STORE_LABEL, keysUnder, type ObjectStores, type StoreKind } from "./helpers/object-backends";
import { objectStoresMissing } from "./helpers/objectstores";
import { readStamp, STAMP_BLOCK } from "./helpers/stamps";

const missing = objectStoresMissing();
const WORKER = join(__dirname, "helpers", "object-worker.js");
const BLOCKS = 256;

let stores: ObjectStores | undefined;
before(async () => {
  stores = await startObjectStores();
});
after(() => stores?.stop());

interface Worker {
  child: ChildProcess;
  lines: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startWorker(config: Record<string, unknown>, volumeId: string, firstSeq: number, env: Record<string, string> = {}, flushEvery = 6, blocks = BLOCKS): Worker {
  const child = spawn(process.execPath, [WORKER, volumeId, String(blocks), String(firstSeq), String(flushEvery)], {
    env: { ...process.env, KINDLING_TEST_OBJECT: JSON.stringify(config), KINDLING_LOG_LEVEL: "error", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  let partial = "";
  child.stdout?.on("data", (d: Buffer) => {
    const text = partial + d.toString();
    const parts = text.split("\n");
    partial = parts.pop() ?? "";
    lines.push(...parts);
  });
  child.stderr?.on("data", () => undefined);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  return { child, lines, exited };
}

async function until(what: string, check: () => boolean, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** What the worker said: the block of every write, and the last acknowledged sequence number. */
class History {
  readonly writes = new Map<number, number>();
  lastAcked = 0;
  maxSeq = 0;

  take(lines: string[]): void {
    for (const line of lines) {
      const [what, a, b] = line.split(" ");
      if (what === "w") {
        this.writes.set(Number(a), Number(b));
        this.maxSeq = Math.max(this.maxSeq, Number(a));
      } else if (what === "acked") this.lastAcked = Math.max(this.lastAcked, Number(a));
    }
  }

  /** After a crash, writes past what the volume holds are gone for good (none was acknowledged). */
  truncate(prefix: number): void {
    for (const seq of [...this.writes.keys()]) if (seq > prefix) this.writes.delete(seq);
  }

  /** The block's stamp after the writes up to `prefix`: the latest one to it, 0 when none. */
  expected(block: number, prefix: number): number {
    let best = 0;
    for (const [seq, b] of this.writes) if (b === block && seq <= prefix && seq > best) best = seq;
    return best;
  }
}

/** The volume (or one of its snapshots) as a fresh process reads it, checked against the history. */
async function check(config: Record<string, unknown>, volumeId: string, history: History, round: string, snapshotId?: string): Promise<number> {
  const backend = await Backend.open(config as never);
  try {
    const device = snapshotId ? await (await backend.getSnapshot(snapshotId)).open() : await (await backend.getVolume(volumeId)).open({ readOnly: true });
    const bytes = Buffer.alloc(BLOCKS * STAMP_BLOCK);
    await device.pread(bytes, 0);
    await device.close();
    const found = Array.from({ length: BLOCKS }, (_, b) => readStamp(bytes.subarray(b * STAMP_BLOCK, (b + 1) * STAMP_BLOCK), b));
    found.forEach((s, b) => assert.notEqual(s, undefined, `${round}: block ${b} is torn or holds another block's data`));
    const prefix = Math.max(...(found as number[]));
    for (let b = 0; b < BLOCKS; b++) {
      assert.equal(found[b], history.expected(b, prefix), `${round}: block ${b} is not the volume after writes up to ${prefix}`);
    }
    if (!snapshotId) assert.ok(prefix >= history.lastAcked, `${round}: writes up to ${history.lastAcked} were acknowledged, the volume holds only up to ${prefix}`);
    return prefix;
  } finally {
    await backend.close();
  }
}

async function allHeaders(config: Record<string, unknown>, store: import("../provider/drivers/object/store").ObjectStore, volumeId: string): Promise<RecordHeader[]> {
  void config;
  const keys = (await keysUnder(store, `kindling/v1/vol/${volumeId}/log/`)).sort();
  const out: RecordHeader[] = [];
  for (const k of keys) {
    const h = await readHeader(store, volumeId, parseInt(k.slice(-16), 16));
    if (h) out.push(h.header);
  }
  return out;
}

for (const kind of STORE_KINDS) {
  describe(`object driver crash safety on ${STORE_LABEL[kind]}`, { skip: missing }, () => {
    test("kill -9 at random moments and at every failpoint: nothing acknowledged is lost, the volume is a prefix", async () => {
      assert.ok(stores);
      // Small records, frequent checkpoints and an immediate sweep, so that every path runs often.
      const made = await objectBackendConfig(stores, kind as StoreKind, { segmentSizeMiB: 1, dirtyAgeSeconds: 0.05, checkpointEvery: 4, gcHorizonSeconds: 0 });
      const config = { name: "objects", ...made.config, persistence: { storage: "sqlite", path: join(made.dir, "records.db") } };
      const setup = await Backend.open(config as never);
      const volume = await setup.createVolume({ name: "crashy", sizeGiB: 1 });
      await setup.close();
      const history = new History();
      const rounds = [
        "commit-before-put:5", "commit-after-put:5", "checkpoint-before-hint:1", "sweep-after-delete:2",
        "random", "random", "random", "random", "random", "random", "commit-after-put:1", "random",
      ];
      const failpointsHit: string[] = [];
      try {
        for (const [i, round] of rounds.entries()) {
          const w = startWorker(config, volume.id, history.maxSeq + 1, round === "random" ? {} : { KINDLING_OBJECT_FAILPOINT: round });
          await until("the worker's open", () => w.lines.includes("open") || w.child.exitCode !== null);
          if (round === "random") {
            await sleep(200 + Math.floor(Math.random() * 1200));
            w.child.kill("SIGKILL");
          } else {
            // The failpoint kills it; a failpoint the workload never reaches is a failed round.
            const killed = await Promise.race([w.exited, sleep(60_000).then(() => undefined)]);
            if (!killed) w.child.kill("SIGKILL");
            assert.ok(killed, `failpoint ${round} was never reached in 60 s`);
          }
          const { signal } = await w.exited;
          assert.equal(signal, "SIGKILL", `round ${i} (${round}): the worker died by SIGKILL: ${w.lines.filter((l) => !l.startsWith("w ")).slice(-3).join(" | ")}`);
          if (round !== "random") failpointsHit.push(round);
          history.take(w.lines);
          history.truncate(await check(config, volume.id, history, `round ${i} (${round})`));
        }
        assert.ok(history.lastAcked > 0, "some FLUSHes were acknowledged");
        assert.equal(failpointsHit.length, 5);
      } finally {
        const b = await Backend.open(config as never);
        await (await b.getVolume(volume.id)).delete();
        await b.close();
        removeDir(made.dir);
      }
    });

    // On Swift, where two creates at one moment can both succeed, the snapshots go through the
    // writer (handoff.ts): this is also the test that it does.
    test("snapshots taken by another process while the writer writes keep their point in time through kill -9 before a pin's checkpoint and the sweeps after", async () => {
      assert.ok(stores);
      const made = await objectBackendConfig(stores, kind as StoreKind, { segmentSizeMiB: 1, dirtyAgeSeconds: 0.05, checkpointEvery: 4, gcHorizonSeconds: 0 });
      const config = { name: "objects", ...made.config, persistence: { storage: "sqlite", path: join(made.dir, "records.db") } };
      const snapshotter = await Backend.open(config as never);
      const volume = await snapshotter.createVolume({ name: "snapped", sizeGiB: 1 });
      const history = new History();
      const taken: Array<{ id: string; acked: number; round: string }> = [];
      const acks = (w: Worker) => w.lines.filter((l) => l.startsWith("acked")).length;
      let live: Worker | undefined;
      try {
        const rounds = ["pin-checkpoint-before-save:1", "", ""];
        for (const [i, failpoint] of rounds.entries()) {
          // Few blocks, so that records die young and the sweeps have work.
          const w = startWorker(config, volume.id, history.maxSeq + 1, failpoint ? { KINDLING_OBJECT_FAILPOINT: failpoint } : {}, 6, 16);
          live = w;
          await until("acknowledged flushes", () => acks(w) >= 3 || w.child.exitCode !== null);
          history.take(w.lines);
          // Everything acknowledged before the snapshot began is in it.
          const acked = history.lastAcked;
          const snap = await volume.createSnapshot({ name: `s${i}` });
          taken.push({ id: snap.id, acked, round: `round ${i} (${failpoint || "kill -9 after more writes"})` });
          if (failpoint) {
            // The writer dies when its sweep first makes a pin's checkpoint.
            const killed = await Promise.race([w.exited, sleep(60_000).then(() => undefined)]);
            if (!killed) w.child.kill("SIGKILL");
            assert.ok(killed, `failpoint ${failpoint} was never reached in 60 s: ${acks(w)} flushes acknowledged, last lines ${w.lines.slice(-3).join(" | ")}`);
          } else {
            const seen = acks(w);
            await until("more acknowledged flushes, past checkpoints and sweeps", () => acks(w) >= seen + 12 || w.child.exitCode !== null);
            w.child.kill("SIGKILL");
          }
          const { signal } = await w.exited;
          assert.equal(signal, "SIGKILL", `round ${i}: the worker died by SIGKILL: ${w.lines.filter((l) => !l.startsWith("w ")).slice(-3).join(" | ")}`);
          history.take(w.lines);
          history.truncate(await check(config, volume.id, history, `round ${i}`));
        }
        const logs = (await keysUnder(made.store, `kindling/v1/vol/${volume.id}/log/`)).length;
        const headers = await allHeaders(config, made.store, volume.id);
        assert.ok(logs < headers[headers.length - 1].seq, `the sweeps deleted records: ${logs} log objects for ${headers[headers.length - 1].seq + 1} records`);
        const ckpts = await keysUnder(made.store, `kindling/v1/vol/${volume.id}/ckpt/`);
        for (const t of taken) {
          const prefix = await check(config, volume.id, history, `snapshot of ${t.round}`, t.id);
          assert.ok(prefix >= t.acked, `${t.round}: writes up to ${t.acked} were acknowledged before the snapshot, it holds only up to ${prefix}`);
        }
        const pinned = headers.filter((h) => h.kind === "snapshot").map((h) => h.seq.toString(16).padStart(16, "0"));
        assert.ok(pinned.slice(0, 2).every((p) => ckpts.some((k) => k.endsWith(p))), "the writers after made the checkpoints of the earlier snapshots");
      } finally {
        // A worker still running (an assertion failed) would hold the volume against the cleanup.
        if (live && live.child.exitCode === null && live.child.signalCode === null) {
          live.child.kill("SIGKILL");
          await live.exited;
        }
        for (const t of taken) await (await snapshotter.getSnapshot(t.id)).delete().catch(() => undefined);
        await (await snapshotter.getVolume(volume.id)).delete();
        await snapshotter.close();
        removeDir(made.dir);
      }
    });

    test(kind === "swift"
      ? "Swift: a snapshot taken while another process writes is appended by that writer (a stopped writer holds it back until it runs again)"
      : "S3: a snapshot taken while another process writes is appended beside it (a stopped writer does not hold it back)", async () => {
      assert.ok(stores);
      const made = await objectBackendConfig(stores, kind as StoreKind, { dirtyAgeSeconds: 0.05 });
      const config = { name: "objects", ...made.config, persistence: { storage: "sqlite", path: join(made.dir, "records.db") } };
      const snapshotter = await Backend.open(config as never);
      const volume = await snapshotter.createVolume({ name: "handed", sizeGiB: 1 });
      const history = new History();
      const w = startWorker(config, volume.id, 1, {}, 4, 16);
      try {
        await until("acknowledged flushes", () => w.lines.filter((l) => l.startsWith("acked")).length >= 3 || w.child.exitCode !== null);
        history.take(w.lines);
        const acked = history.lastAcked;
        w.child.kill("SIGSTOP");
        let settled = false;
        const taking = volume.createSnapshot({ name: "while-stopped" }).finally(() => (settled = true));
        await sleep(1500);
        const whileStopped = settled;
        w.child.kill("SIGCONT");
        const snap = await taking;
        if (kind === "swift") assert.equal(whileStopped, false, "the snapshot waited for the stopped writer");
        else assert.equal(whileStopped, true, "the snapshot was taken while the writer was stopped");
        w.child.kill("SIGKILL");
        await w.exited;
        history.take(w.lines);
        const prefix = await check(config, volume.id, history, "the snapshot", snap.id);
        assert.ok(prefix >= acked, `writes up to ${acked} were acknowledged before the snapshot, it holds only up to ${prefix}`);
        const left = (await keysUnder(made.store, `kindling/v1/vol/${volume.id}/`)).filter((k) => /\/(ask|answer\/.*)$/.test(k));
        assert.deepEqual(left, [], "no ask or answer is left behind");
        await (await snapshotter.getSnapshot(snap.id)).delete();
      } finally {
        if (w.child.exitCode === null && w.child.signalCode === null) {
          w.child.kill("SIGCONT");
          w.child.kill("SIGKILL");
          await w.exited;
        }
        await (await snapshotter.getVolume(volume.id)).delete();
        await snapshotter.close();
        removeDir(made.dir);
      }
    });

    test("fencing: a paused writer whose lease ran out gets EIO on FLUSH and commits nothing after the new writer's open", async () => {
      assert.ok(stores);
      const made = await objectBackendConfig(stores, kind as StoreKind, { leaseSeconds: 3, dirtyAgeSeconds: 0.05 });
      const config = { name: "objects", ...made.config, persistence: { storage: "sqlite", path: join(made.dir, "records.db") } };
      const setup = await Backend.open(config as never);
      const volume = await setup.createVolume({ name: "fenced", sizeGiB: 1 });
      await setup.close();
      const a = startWorker(config, volume.id, 1, {}, 4);
      let b: Worker | undefined;
      try {
        await until("a's first acknowledged flush", () => a.lines.some((l) => l.startsWith("acked")));
        a.child.kill("SIGSTOP");
        // While its lease is good, a second writer is refused.
        const early = startWorker(config, volume.id, 1_000_000, {}, 4);
        const refused = await early.exited;
        assert.equal(refused.code, 2, "the second writer is refused while the lease holds");
        assert.match(early.lines.join("\n"), /held by writer/);
        await sleep(3000 + 5000 + 1000); // the lease and the skew allowance run out
        b = startWorker(config, volume.id, 1_000_000, {}, 4);
        await until("b's acknowledged flushes", () => (b as Worker).lines.filter((l) => l.startsWith("acked")).length >= 3);
        a.child.kill("SIGCONT");
        const ended = await Promise.race([a.exited, sleep(60_000).then(() => undefined)]);
        assert.ok(ended, "the resumed writer stops");
        assert.equal(ended.code, 3, `the resumed writer's FLUSH fails: ${a.lines.slice(-2).join(" | ")}`);
        assert.match(a.lines.join("\n"), /flush-failed .*(stopped|lease)/);
        b.child.kill("SIGKILL");
        await b.exited;
        const headers = await allHeaders(config, made.store, volume.id);
        const opens = headers.filter((h) => h.kind === "open");
        assert.ok(opens.length >= 2, "two writers opened the volume");
        const bOpen = opens[opens.length - 1].seq;
        const aEpoch = opens[opens.length - 2].seq;
        for (const h of headers.filter((x) => x.seq > bOpen && x.kind === "data")) assert.equal(h.epoch, bOpen, `record ${h.seq} after b's open is b's`);
        assert.ok(headers.some((h) => h.kind === "data" && h.epoch === aEpoch && h.seq < bOpen), "a committed before it was paused");
        // No record was written by both: every sequence number holds one record (the store's create-only PUT).
        assert.equal(new Set(headers.map((h) => h.seq)).size, headers.length);
      } finally {
        a.child.kill("SIGKILL");
        b?.child.kill("SIGKILL");
        const c = await Backend.open(config as never);
        await (await c.getVolume(volume.id)).delete().catch(() => undefined);
        await c.close();
        removeDir(made.dir);
      }
    });

    test("durability local: a FLUSH is the journal on disk; after kill -9 the next writer here puts it back", async () => {
      assert.ok(stores);
      // Nothing reaches the store by itself for a minute: whatever survives comes from the journal.
      const made = await objectBackendConfig(stores, kind as StoreKind, { durability: "local", dirtyAgeSeconds: 60, segmentSizeMiB: 32 });
      const config = { name: "objects", ...made.config, persistence: { storage: "sqlite", path: join(made.dir, "records.db") } };
      const setup = await Backend.open(config as never);
      const volume = await setup.createVolume({ name: "journalled", sizeGiB: 1 });
      await setup.close();
      const history = new History();
      try {
        const w = startWorker(config, volume.id, 1, {}, 4);
        await until("acknowledged flushes", () => w.lines.filter((l) => l.startsWith("acked")).length >= 5);
        w.child.kill("SIGKILL");
        await w.exited;
        history.take(w.lines);
        assert.ok(history.lastAcked >= 20);
        const logs = (await keysUnder(made.store, `kindling/v1/vol/${volume.id}/log/`)).length;
        assert.ok(logs <= 3, `the writes never reached the store (${logs} log records: genesis, open)`);
        // Another host's writer (its own cache directory, no journal) would have to refuse nothing;
        // this host's next writer replays the journal and commits it.
        const b = await Backend.open(config as never);
        const d = await (await b.getVolume(volume.id)).open();
        await d.close();
        await b.close();
        history.truncate(await check(config, volume.id, history, "after the replay"));
      } finally {
        const c = await Backend.open(config as never);
        await (await c.getVolume(volume.id)).delete().catch(() => undefined);
        await c.close();
        removeDir(made.dir);
      }
    });

    test("durability local: a journal left behind after another writer opened the volume is refused, not replayed over it", async () => {
      assert.ok(stores);
      const made = await objectBackendConfig(stores, kind as StoreKind, { durability: "local", dirtyAgeSeconds: 60, segmentSizeMiB: 32 });
      const config = { name: "objects", ...made.config, persistence: { storage: "sqlite", path: join(made.dir, "records.db") } };
      const elsewhere = { ...config, cacheDir: join(made.dir, "other-host-cache") };
      const setup = await Backend.open(config as never);
      const volume = await setup.createVolume({ name: "diverged", sizeGiB: 1 });
      await setup.close();
      try {
        const w = startWorker(config, volume.id, 1, {}, 4);
        await until("acknowledged flushes", () => w.lines.some((l) => l.startsWith("acked")));
        w.child.kill("SIGKILL");
        await w.exited;
        const other = await Backend.open(elsewhere as never);
        const od = await (await other.getVolume(volume.id)).open();
        await od.pwrite(Buffer.alloc(4096, 0x77), 0);
        await od.close();
        await other.close();
        const again = await Backend.open(config as never);
        try {
          await assert.rejects((await again.getVolume(volume.id)).open(), /journal .* holds writes the store never got, and another writer has opened the volume since/);
        } finally {
          await again.close();
        }
      } finally {
        const c = await Backend.open(elsewhere as never);
        await (await c.getVolume(volume.id)).delete().catch(() => undefined);
        await c.close();
        removeDir(made.dir);
      }
    });

    test("the store stops answering mid-write: FLUSH fails clearly, and nothing acknowledged or written is lost", async () => {
      assert.ok(stores);
      const made = await objectBackendConfig(stores, kind as StoreKind, { timeoutSeconds: 2 });
      const config = { name: "objects", ...made.config, persistence: { storage: "sqlite", path: join(made.dir, "records.db") } };
      const backend = await Backend.open(config as never);
      const server = kind === "s3" ? stores.rgw.procs.find((p) => /radosgw/.test(p.cmdline)) : stores.swift.procs.find((p) => /proxy-server/.test(p.cmdline));
      assert.ok(server, "the store's server process is known");
      try {
        const volume = await backend.createVolume({ name: "flaky", sizeGiB: 1 });
        const device = await volume.open();
        await device.pwrite(Buffer.alloc(65536, 1), 0);
        await device.flush();
        await device.pwrite(Buffer.alloc(65536, 2), 65536);
        process.kill(server.pid, "SIGSTOP");
        let failed: Error | undefined;
        try {
          await device.flush();
        } catch (err) {
          failed = err as Error;
        } finally {
          process.kill(server.pid, "SIGCONT");
        }
        assert.ok(failed, "FLUSH fails while the store does not answer");
        assert.match(failed.message, /127\.0\.0\.1/);
        await device.flush(); // the same writes, committed now
        await device.close();
        const other = await Backend.open(config as never);
        const ro = await (await other.getVolume(volume.id)).open({ readOnly: true });
        const got = Buffer.alloc(131072);
        await ro.pread(got, 0);
        await ro.close();
        await other.close();
        assert.deepEqual(got, Buffer.concat([Buffer.alloc(65536, 1), Buffer.alloc(65536, 2)]));
        await volume.delete();
      } finally {
        process.kill(server.pid, "SIGCONT");
        await backend.close();
        removeDir(made.dir);
      }
    });
  });
}
