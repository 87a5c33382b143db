// Many processes, one truth: library processes and `kindling` commands racing on the same
// volumes, each case written as the failure it once was (see the defects notes: D3, D4, D5,
// D11). Afterwards the records must equal the storage.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";
import { Backend } from "../provider/library";
import { needsRoot, removeDir, tempDir } from "./helpers/env";
import { KINDLING, kindling } from "./helpers/cli";
import { detachLoopsUnder, loopDevices, recordsVersusStorage } from "./helpers/consistency";
import type { LoopFilesystem } from "./helpers/filesystems";
import { bigVolumeBackend } from "./helpers/big-volume";

const execFileAsync = promisify(execFile);
const WORKER = resolve(__dirname, "helpers", "race-worker.js");

interface Summary {
  ok: number;
  failed: Record<string, number>;
}

/** Runs two race workers released together; resolves with their summaries. */
async function race(config: object, dir: string, a: string, b: string, names: string[]): Promise<[Summary, Summary]> {
  const barrier = join(dir, `go-${a}-${b}`);
  const run = (operation: string) => execFileAsync(process.execPath, [WORKER, JSON.stringify(config), operation, barrier, ...names], { maxBuffer: 1 << 20 });
  const racers = [run(a), run(b)];
  // Both open their backend first; the barrier then lets them go at the same moment.
  setTimeout(() => writeFileSync(barrier, ""), 500);
  const [ra, rb] = await Promise.all(racers);
  return [JSON.parse(ra.stdout) as Summary, JSON.parse(rb.stdout) as Summary];
}

describe("two library processes racing on 200 volumes", () => {
  let dir: string;
  let pool: string;
  let config: Record<string, unknown>;
  let backend: Backend;
  const names = Array.from({ length: 200 }, (_, i) => `v${i}`);

  before(async () => {
    dir = tempDir();
    pool = join(dir, "volumes");
    config = { name: "racy", driver: "file", path: pool };
    backend = await Backend.open(config as never);
  });
  after(async () => {
    await backend.close();
    removeDir(dir);
  });

  async function fresh(): Promise<void> {
    for (const v of await backend.volumes()) {
      await v.disconnect();
      await v.delete();
    }
    for (const name of names) await backend.createVolume({ sizeGiB: 1, name });
  }

  test("extend against delete: no ghost records, every delete sticks", async () => {
    await fresh();
    const [extend, del] = await race(config, dir, "extend", "delete", names);
    assert.equal(del.ok, 200, `every delete succeeded: ${JSON.stringify(del)}`);
    // An extend that came second found nothing to extend; none failed any other way.
    assert.deepEqual(Object.keys(extend.failed).filter((k) => k !== "NOT_FOUND"), []);
    assert.equal(extend.ok + (extend.failed.NOT_FOUND ?? 0), 200);
    assert.deepEqual(await backend.volumes(), [], "no record outlived its delete (defect D4: 10 ghosts)");
    assert.deepEqual(await recordsVersusStorage(backend, pool), []);
  });

  test("extend against connect: every record keeps the size its file has", async () => {
    await fresh();
    const [extend, connect] = await race(config, dir, "extend", "connect", names);
    assert.equal(extend.ok, 200, JSON.stringify(extend));
    assert.equal(connect.ok, 200, JSON.stringify(connect));
    const volumes = await backend.volumes();
    assert.ok(volumes.every((v) => v.sizeGiB === 2 && v.status === "in-use"), "all grown and in use (defect D4: 5 records back at 1 GiB)");
    assert.deepEqual(await recordsVersusStorage(backend, pool), []);
  });

  test("extend against a metadata update: neither change is lost", async () => {
    await fresh();
    const [extend, update] = await race(config, dir, "extend", "update", names);
    assert.equal(extend.ok, 200, JSON.stringify(extend));
    assert.equal(update.ok, 200, JSON.stringify(update));
    for (const v of await backend.volumes()) {
      assert.equal(v.sizeGiB, 2, `${v.name} grew`);
      assert.deepEqual(v.metadata, { owner: "racer", name: v.name }, `${v.name} kept its metadata (defect D4: lost)`);
    }
    assert.deepEqual(await recordsVersusStorage(backend, pool), []);
  });

  test("two processes snapshotting the same volumes: both run, one after the other", async () => {
    await fresh();
    const some = names.slice(0, 20);
    const [a, b] = await race(config, dir, "snapshot", "snapshot", some);
    assert.equal(a.ok + b.ok, 40, JSON.stringify({ a, b }));
    assert.equal((await backend.snapshots()).length, 40);
    assert.deepEqual(await recordsVersusStorage(backend, pool), []);
    for (const s of await backend.snapshots()) await s.delete();
  });
});

describe("the command, many processes at once", () => {
  let dir: string;
  let configFile: string;
  before(() => {
    dir = tempDir();
  });
  after(() => {
    detachLoopsUnder(dir);
    removeDir(dir);
  });

  const k = (args: string[]) => kindling(["--config", configFile, ...args]);
  /** bin/kindling in parallel, as separate processes; resolves with their exit codes and output. */
  const parallel = (argsList: string[][]) =>
    Promise.all(argsList.map((args) => new Promise<{ code: number; stdout: string; stderr: string }>((done) => {
      const child = spawn(KINDLING, ["--config", configFile, ...args], { stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => (stderr += d));
      child.on("exit", (code) => done({ code: code ?? -1, stdout, stderr }));
    })));

  test("25 parallel attaches of 5 volumes give 5 devices and 5 connections (defect D3)", async (t) => {
    if (needsRoot(t)) return;
    const pool = join(dir, "attach");
    configFile = join(dir, "attach.json");
    writeFileSync(configFile, JSON.stringify({ backends: { local: { driver: "file", path: pool } } }));
    for (let i = 0; i < 5; i++) assert.equal(k(["volume", "create", `n${i}`, "--size", "1"]).code, 0);
    const results = await parallel(Array.from({ length: 25 }, (_, i) => ["attach", `n${i % 5}`]));
    const won = results.filter((r) => r.code === 0);
    assert.equal(won.length, 5, results.map((r) => `${r.code} ${r.stdout}${r.stderr}`).join("\n"));
    assert.ok(results.filter((r) => r.code !== 0).every((r) => r.code === 4 && /already attached/.test(r.stderr)), "the others are told it is attached");
    const devices = [...loopDevices()].filter(([, file]) => file.startsWith(pool + "/"));
    assert.equal(devices.length, 5, "one loop device per volume (the defect gave n1 four)");
    const backend = await Backend.open({ name: "local", driver: "file", path: pool });
    try {
      assert.equal((await backend.connections()).length, 5);
      assert.deepEqual(await recordsVersusStorage(backend, pool), []);
    } finally {
      await backend.close();
    }
    for (let i = 0; i < 5; i++) assert.equal(k(["disconnect", `n${i}`]).code, 0);
    assert.equal([...loopDevices()].filter(([, file]) => file.startsWith(pool + "/")).length, 0, "disconnect released them all");
  });

  test("json persistence: 20 parallel snapshots with one name give exactly one, and all stays deletable (defect D11)", async () => {
    const pool = join(dir, "json-pool");
    configFile = join(dir, "json.json");
    writeFileSync(configFile, JSON.stringify({ persistence: { storage: "json", path: join(dir, "json-records") }, backends: { local: { driver: "file", path: pool } } }));
    assert.equal(k(["volume", "create", "base", "--size", "1"]).code, 0);
    const results = await parallel(Array.from({ length: 20 }, () => ["snapshot", "create", "base", "ssame"]));
    assert.equal(results.filter((r) => r.code === 0).length, 1, results.map((r) => `${r.code} ${r.stderr}`).join("\n"));
    assert.ok(results.filter((r) => r.code !== 0).every((r) => r.code === 4 && /already exists/.test(r.stderr)));
    const listed = k(["--json", "snapshot", "list"]).json<Array<{ name: string; status: string }>>();
    assert.deepEqual(listed.map((s) => [s.name, s.status]), [["ssame", "available"]], "one record, available (the defect left two, creating)");
    assert.equal(k(["snapshot", "delete", "ssame"]).code, 0);
    assert.equal(k(["volume", "delete", "base"]).code, 0);
    const backend = await Backend.open({ name: "local", driver: "file", path: pool, persistence: { storage: "json", path: join(dir, "json-records") } });
    try {
      assert.deepEqual(await recordsVersusStorage(backend, pool), []);
    } finally {
      await backend.close();
    }
  });
});

describe("a snapshot of a volume still being cloned (defect D5)", () => {
  let fs: LoopFilesystem | undefined;
  after(() => fs?.remove());

  test("waits for the clone and holds all of its data", async (t) => {
    if (needsRoot(t)) return;
    const setup = await bigVolumeBackend(4096); // the volume, its clone and the snapshot: 3 GiB of data
    fs = setup.fs;
    const { pool, configFile, k, backend, big } = setup;
    try {
      const digest = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
      const expected = digest(big.location as string);

      const clone = spawn(KINDLING, ["--config", configFile, "volume", "clone", "big", "c2"], { stdio: "ignore" });
      const cloned = new Promise<number>((done) => clone.on("exit", (code) => done(code ?? -1)));
      // Once the clone's record exists, snapshot it.
      for (let i = 0; i < 500 && !(await backend.volumes()).some((v) => v.name === "c2"); i++) await new Promise((r) => setTimeout(r, 10));
      const early = k(["snapshot", "create", "c2", "c2-early"]);
      assert.equal(early.code, 0, early.stderr);
      assert.equal(await cloned, 0);
      const snapshot = await backend.getSnapshot("c2-early");
      assert.equal(snapshot.status, "available");
      assert.equal(digest(snapshot.location as string), expected, "the snapshot holds all of the clone's data (the defect zeroed a third)");
      assert.deepEqual(await recordsVersusStorage(backend, pool), []);
    } finally {
      await backend.close();
    }
  });
});
