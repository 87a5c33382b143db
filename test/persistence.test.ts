// One contract, every plugin: memory, json, sqlite, and a custom module.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { DatabaseSync } from "node:sqlite";
import { after, before, describe, test } from "node:test";
import { InvalidInputError } from "../provider/util/errors";
import { openPersistence, type Persistence, type SnapshotRecord, type VolumeRecord, type ConnectionRecord } from "../provider/persistence";
import { SqlitePersistence } from "../provider/persistence/sqlite";
import { newId } from "../provider/util/ids";
import { listTree, removeDir, tempDir } from "./helpers/env";
import { DatabaseServer, databasesMissing, type DatabaseKind } from "./helpers/databases";

const execFileAsync = promisify(execFile);
const root = tempDir();
after(() => removeDir(root));

function volume(fields: Partial<VolumeRecord> = {}): VolumeRecord {
  const id = newId();
  return { class: "Volume", id, name: `v-${id}`, description: "", backend: "b1", pool: "p", sizeGiB: 1, status: "available", extraSpecs: {}, qosSpecs: {}, metadata: { k: "v" }, createdAt: "2026-01-01T00:00:00.000Z", updatedAt: "2026-01-01T00:00:00.000Z", ...fields };
}
function snapshot(volumeId: string, fields: Partial<SnapshotRecord> = {}): SnapshotRecord {
  const id = newId();
  return { class: "Snapshot", id, name: `s-${id}`, description: "", backend: "b1", volumeId, volumeSizeGiB: 1, pool: "p", status: "available", metadata: {}, createdAt: "2026-01-01T00:00:00.000Z", updatedAt: "2026-01-01T00:00:00.000Z", ...fields };
}
function connection(volumeId: string): ConnectionRecord {
  return { class: "Connection", id: newId(), backend: "b1", volumeId, protocol: "local", connector: { host: "h" }, connectionInfo: { driver_volume_type: "local", data: { device_path: "/x" } }, attachMode: "rw", createdAt: "2026-01-01T00:00:00.000Z", updatedAt: "2026-01-01T00:00:00.000Z" };
}

/** Gives a stored record another name without the store's checks (as a race once could). */
async function forceName(p: Persistence, id: string, name: string): Promise<void> {
  const dir = (p as unknown as { dir?: string }).dir;
  if (dir) {
    const file = join(dir, "volumes", `${id}.json`);
    writeFileSync(file, JSON.stringify({ ...JSON.parse(readFileSync(file, "utf8")), name }));
    return;
  }
  const tables = (p as unknown as { tables: { volume: Map<string, VolumeRecord> } }).tables;
  tables.volume.set(id, { ...(tables.volume.get(id) as VolumeRecord), name });
}

const customModule = join(root, "custom-plugin.js");
writeFileSync(customModule, `
  const { MemoryPersistence } = require(${JSON.stringify(resolve(__dirname, "..", "provider", "persistence", "memory"))});
  exports.createPersistence = (options) => Object.assign(new MemoryPersistence(), { kind: "custom", options });
`);

// The database servers every store test below also runs against (make setup installs them).
const servers: Partial<Record<DatabaseKind, DatabaseServer>> = {};
const serversMissing = databasesMissing();
before(async () => {
  if (serversMissing) return;
  servers.postgres = await DatabaseServer.start("postgres");
  servers.mysql = await DatabaseServer.start("mysql");
});
after(async () => {
  for (const server of Object.values(servers)) await server?.stop();
});

/** A server's store with no records left by an earlier test (they share one database). */
async function emptied(kind: DatabaseKind): Promise<Persistence> {
  const p = await openPersistence((servers[kind] as DatabaseServer).persistence());
  for (const v of await p.getVolumes()) await p.deleteVolume(v.id);
  for (const s of await p.getSnapshots()) await p.deleteSnapshot(s.id);
  for (const c of await p.getConnections()) await p.deleteConnection(c.id);
  for (const kv of await p.getKeyValues()) await p.deleteKeyValue(kv.key);
  return p;
}

const plugins: Record<string, () => Promise<Persistence>> = {
  memory: () => openPersistence({ storage: "memory" }),
  json: () => openPersistence({ storage: "json", path: join(root, `json-${newId()}`) }),
  sqlite: () => openPersistence({ storage: "sqlite", path: join(root, `sqlite-${newId()}`, "k.db") }),
  postgres: () => emptied("postgres"),
  mysql: () => emptied("mysql"),
  custom: () => openPersistence({ storage: "custom", module: "./custom-plugin.js", options: { a: 1 } }, { baseDir: root }),
};

for (const [kind, open] of Object.entries(plugins)) {
  const server = kind === "postgres" || kind === "mysql";
  describe(`${kind} persistence`, { skip: server ? serversMissing : undefined }, () => {
    test("volumes: set, get by filter, replace, delete", async () => {
      const p = await open();
      const a = volume({ name: "a" });
      const b = volume({ name: "b", backend: "b2" });
      await p.setVolume(a);
      await p.setVolume(b);
      assert.deepEqual(await p.getVolumes({ id: a.id }), [a]);
      assert.deepEqual(await p.getVolumes({ name: "b" }), [b]);
      assert.deepEqual(await p.getVolumes({ backend: "b1" }), [a]);
      assert.deepEqual((await p.getVolumes()).map((v) => v.id).sort(), [a.id, b.id].sort());
      assert.deepEqual(await p.getVolumes({ name: "a", backend: "b2" }), []);
      await p.setVolume({ ...a, sizeGiB: 5, status: "in-use" });
      assert.equal((await p.getVolumes({ id: a.id }))[0].sizeGiB, 5);
      assert.equal((await p.getVolumes()).length, 2, "replaced, not added");
      await p.deleteVolume(a.id);
      await p.deleteVolume(a.id);
      assert.deepEqual(await p.getVolumes({ id: a.id }), []);
      await p.close();
    });

    test("snapshots and connections filter by volume", async () => {
      const p = await open();
      const v = volume();
      const s1 = snapshot(v.id);
      const s2 = snapshot(newId());
      const c = connection(v.id);
      await p.setVolume(v);
      await p.setSnapshot(s1);
      await p.setSnapshot(s2);
      await p.setConnection(c);
      assert.deepEqual(await p.getSnapshots({ volumeId: v.id }), [s1]);
      assert.deepEqual(await p.getSnapshots({ id: s2.id }), [s2]);
      assert.deepEqual(await p.getSnapshots({ name: s1.name }), [s1]);
      assert.deepEqual(await p.getConnections({ volumeId: v.id }), [c]);
      assert.deepEqual(await p.getConnections({ id: c.id }), [c]);
      await p.deleteConnection(c.id);
      await p.deleteSnapshot(s1.id);
      await p.deleteSnapshot(s1.id);
      assert.deepEqual(await p.getConnections(), []);
      assert.deepEqual(await p.getSnapshots({ volumeId: v.id }), []);
      await p.close();
    });

    test("key-values", async () => {
      const p = await open();
      await p.setKeyValue({ key: "node-1", value: '{"host":"a"}' });
      await p.setKeyValue({ key: "../../etc/evil", value: "x" });
      await p.setKeyValue({ key: "node-1", value: '{"host":"b"}' });
      assert.deepEqual(await p.getKeyValues("node-1"), [{ key: "node-1", value: '{"host":"b"}' }]);
      assert.equal((await p.getKeyValues()).length, 2);
      await p.deleteKeyValue("node-1");
      await p.deleteKeyValue("node-1");
      assert.deepEqual(await p.getKeyValues("node-1"), []);
      await p.close();
    });

    test("compare-and-set of key-values", async () => {
      const p = await open();
      assert.equal(await p.compareAndSetKeyValue("lock", undefined, "a"), true, "set when absent");
      assert.equal(await p.compareAndSetKeyValue("lock", undefined, "b"), false, "not when present");
      assert.equal(await p.compareAndSetKeyValue("lock", "x", "b"), false, "not when it holds something else");
      assert.equal(await p.compareAndSetKeyValue("lock", "a", "b"), true);
      assert.deepEqual(await p.getKeyValues("lock"), [{ key: "lock", value: "b" }]);
      const racers = await Promise.all(Array.from({ length: 10 }, (_, i) => p.compareAndSetKeyValue("race", undefined, `r${i}`)));
      assert.equal(racers.filter(Boolean).length, 1, "exactly one of ten racers wins");
      assert.equal(await p.compareAndSetKeyValue("lock", "b", undefined), true, "delete when it holds what we expect");
      assert.deepEqual(await p.getKeyValues("lock"), []);
      await p.close();
    });

    test("compare-and-set of records: insert, change at the read version only, delete at it", async () => {
      const p = await open();
      const v = volume({ name: "cas", version: 1 });
      assert.equal(await p.compareAndSetRecord("volume", v, 0), true, "insert when absent");
      assert.equal(await p.compareAndSetRecord("volume", { ...v, name: "other" }, 0), false, "not a second insert of the id");
      assert.equal(await p.compareAndSetRecord("volume", { ...v, sizeGiB: 2, version: 2 }, 1), true, "change at the read version");
      assert.equal(await p.compareAndSetRecord("volume", { ...v, sizeGiB: 3, version: 2 }, 1), false, "not at a version since changed");
      assert.equal((await p.getVolumes({ id: v.id }))[0].sizeGiB, 2, "the refused change wrote nothing");
      assert.equal(await p.compareAndSetRecord("volume", { ...volume(), id: newId(), version: 2 }, 1), false, "no change of a record that is not there");
      const racers = await Promise.all(Array.from({ length: 10 }, (_, i) => p.compareAndSetRecord("volume", { ...v, sizeGiB: 10 + i, version: 3 }, 2)));
      assert.equal(racers.filter(Boolean).length, 1, "exactly one of ten racers at one version wins");
      assert.equal(await p.compareAndDeleteRecord("volume", v.id, 2), false, "no delete at an old version");
      assert.equal(await p.compareAndDeleteRecord("volume", v.id, 3), true);
      assert.equal(await p.compareAndDeleteRecord("volume", v.id, 3), false, "gone");
      assert.deepEqual(await p.getVolumes({ id: v.id }), []);
      const s = snapshot(newId(), { version: 1 });
      const c = { ...connection(newId()), version: 1 };
      assert.equal(await p.compareAndSetRecord("snapshot", s, 0), true);
      assert.equal(await p.compareAndSetRecord("connection", c, 0), true);
      assert.equal(await p.compareAndSetRecord("connection", { ...c, devicePath: "/dev/loop9", version: 2 }, 1), true);
      assert.equal((await p.getConnections({ id: c.id }))[0].devicePath, "/dev/loop9");
      assert.equal(await p.compareAndDeleteRecord("snapshot", s.id, 1), true);
      await p.close();
    });

    test("compare-and-set of records checks names on inserts and renames only", async () => {
      const p = await open();
      const a = volume({ name: "taken", version: 1 });
      assert.equal(await p.compareAndSetRecord("volume", a, 0), true);
      await assert.rejects(p.compareAndSetRecord("volume", volume({ name: "taken", version: 1 }), 0), /already exists/, "insert of a taken name");
      const b = volume({ name: "free", version: 1 });
      await p.compareAndSetRecord("volume", b, 0);
      await assert.rejects(p.compareAndSetRecord("volume", { ...b, name: "taken", version: 2 }, 1), /already exists/, "rename to a taken name");
      // Two records with one name, as an older store could leave them (the json store before
      // it took a lock): each can still change status and be deleted.
      const twin = volume({ name: "twin", version: 1 });
      await p.setVolume(twin);
      const clash = { ...volume({ name: "twin-other", version: 1 }) };
      await p.setVolume(clash);
      const stored = (await p.getVolumes({ id: clash.id }))[0];
      if (!["sqlite", "postgres", "mysql"].includes(p.kind)) {
        // The SQL stores' UNIQUE constraint keeps such twins from ever existing; the document
        // stores are checked with twins made behind their back.
        await forceName(p, clash.id, "twin");
        assert.equal(await p.compareAndSetRecord("volume", { ...stored, name: "twin", status: "deleting", version: 2 }, 1), true, "a status change of a twin goes through");
        assert.equal(await p.compareAndDeleteRecord("volume", clash.id, 2), true, "and it can be deleted");
      }
      await p.close();
    });

    test("records from before versions count as version 1", async () => {
      const p = await open();
      const old = volume({ name: "legacy" });
      delete (old as { version?: number }).version;
      await p.setVolume(old);
      assert.equal(await p.compareAndSetRecord("volume", { ...old, status: "deleting", version: 2 }, 1), true);
      assert.equal(await p.compareAndDeleteRecord("volume", old.id, 2), true);
      await p.close();
    });

    test("names are unique per backend", async () => {
      const p = await open();
      await p.setVolume(volume({ name: "same" }));
      await p.setVolume(volume({ name: "same", backend: "other" }));
      await assert.rejects(p.setVolume(volume({ name: "same" })), /already exists/);
      const v = volume();
      await p.setSnapshot(snapshot(v.id, { name: "snap" }));
      await assert.rejects(p.setSnapshot(snapshot(v.id, { name: "snap" })), /already exists/);
      assert.equal((await p.getVolumes({ name: "same" })).length, 2);
      await p.close();
    });

    test("results are copies", async () => {
      const p = await open();
      const v = volume();
      await p.setVolume(v);
      const [got] = await p.getVolumes({ id: v.id });
      got.metadata.k = "changed";
      got.sizeGiB = 99;
      v.sizeGiB = 42;
      assert.deepEqual((await p.getVolumes({ id: v.id }))[0].sizeGiB, 1);
      assert.deepEqual((await p.getVolumes({ id: v.id }))[0].metadata, { k: "v" });
      await p.close();
    });
  });
}

describe("json persistence on disk", () => {
  test("documents stay inside the directory, are written whole, and a second instance reads them", async () => {
    const dir = join(root, "json-disk");
    const p = await openPersistence({ storage: "json", path: dir });
    const v = volume();
    await p.setVolume(v);
    await p.setKeyValue({ key: "../../../escape", value: "x" });
    await assert.rejects(p.setVolume({ ...volume(), id: "../../x" }), (e: unknown) => e instanceof InvalidInputError && e.field === "id");
    const files = listTree(dir);
    // Besides the documents: the store's lock and its space reserve.
    assert.ok(files.every((f) => /^(\.lock|\.reserve|(volumes|keyvalues)(\/[0-9a-f-]+\.json)?)$/.test(f)), files.join(","));
    assert.ok(!files.some((f) => f.includes(".tmp-")), "no temp files left");
    assert.deepEqual(readdirSync(root).filter((f) => f.includes("escape")), []);
    const second = await openPersistence({ storage: "json", path: dir });
    assert.deepEqual(await second.getVolumes({ id: v.id }), [v]);
    assert.deepEqual(await second.getKeyValues("../../../escape"), [{ key: "../../../escape", value: "x" }]);
  });
});

describe("sqlite persistence on disk", () => {
  test("WAL, schema version, file mode 0600", async () => {
    const path = join(root, "sq1", "k.db");
    const p = new SqlitePersistence(path);
    const info = p.info();
    assert.equal(info.journalMode, "wal");
    assert.equal(info.userVersion, info.migrations);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(statSync(join(root, "sq1")).mode & 0o777, 0o700);
    await p.close();
    // Opening again runs no migration twice.
    const again = new SqlitePersistence(path);
    assert.equal(again.info().userVersion, info.migrations);
    await again.close();
  });

  test("a database from a newer kindling is refused clearly", async () => {
    const path = join(root, "sq2", "k.db");
    await (new SqlitePersistence(path)).close();
    const raw = new DatabaseSync(path);
    raw.exec("PRAGMA user_version = 99");
    raw.close();
    assert.throws(() => new SqlitePersistence(path), /schema version 99, newer than this kindling knows/);
  });

  test("two processes writing at once: every record lands", async () => {
    const path = join(root, "sq3", "k.db");
    await (new SqlitePersistence(path)).close();
    const module = resolve(__dirname, "..", "provider", "persistence", "sqlite");
    const script = `
      const { SqlitePersistence } = require(${JSON.stringify(module)});
      const p = new SqlitePersistence(${JSON.stringify(path)});
      (async () => {
        await Promise.all(Array.from({ length: 20 }, (_, i) => p.setKeyValue({ key: process.argv[1] + i, value: "v" })));
        for (let i = 0; i < 20; i++) await p.setVolume(JSON.parse(process.argv[2].replaceAll("ID", process.argv[1] + "-" + i)));
        await p.close();
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const template = JSON.stringify(volume({ id: "ID", name: "ID" }));
    await Promise.all(["a", "b"].map((tag) => execFileAsync(process.execPath, ["-e", script, tag, template])));
    const p = new SqlitePersistence(path);
    assert.equal((await p.getKeyValues()).length, 40);
    assert.equal((await p.getVolumes()).length, 40);
    await p.close();
  });
});

describe("persistence configuration", () => {
  for (const [config, field] of [
    [{ storage: "nosql" }, "persistence.storage"],
    [{ storage: "json" }, "persistence.path"],
    [{ storage: "sqlite", path: "" }, "persistence.path"],
    [{ storage: "memory", path: "/x" }, "persistence.path"],
    [{ storage: "custom" }, "persistence.module"],
  ] as const) {
    test(`${JSON.stringify(config)} names ${field}`, async () => {
      await assert.rejects(openPersistence(config as never), (e: unknown) => e instanceof InvalidInputError && e.field === field);
    });
  }

  test("a custom module missing a method is refused, naming it", async () => {
    const file = join(root, "incomplete.js");
    writeFileSync(file, "module.exports = class { getVolumes() {} };");
    await assert.rejects(openPersistence({ storage: "custom", module: file }), (e: unknown) => e instanceof InvalidInputError && e.field === "persistence.module" && /getSnapshots/.test(e.message));
    await assert.rejects(openPersistence({ storage: "custom", module: join(root, "missing.js") }), /cannot load/);
  });

  test("a custom module gets its options", async () => {
    const p = (await openPersistence({ storage: "custom", module: customModule, options: { region: "x" } })) as Persistence & { options: unknown };
    assert.equal(p.kind, "custom");
    assert.deepEqual(p.options, { region: "x" });
  });
});

describe("compare-and-set across processes", () => {
  // Each process reads a counter kept in a volume record and writes it back one higher, by
  // compare-and-set, retrying lost races: no increment may be lost, whatever the interleaving.
  const module = resolve(__dirname, "..", "provider", "persistence");
  const script = `
    const { openPersistence } = require(${JSON.stringify(module)});
    (async () => {
      // The store's settings (a database password among them) come in the environment, never on a command line.
      const p = await openPersistence(JSON.parse(process.env.KINDLING_TEST_STORE));
      const id = process.argv[1];
      for (let i = 0; i < 100; i++) {
        for (;;) {
          const [v] = await p.getVolumes({ id });
          const next = { ...v, sizeGiB: v.sizeGiB + 1, version: v.version + 1 };
          if (await p.compareAndSetRecord("volume", next, v.version)) break;
        }
      }
      await p.close();
    })().catch((e) => { console.error(e); process.exit(1); });`;

  for (const storage of ["sqlite", "json", "postgres", "mysql"] as const) {
    const server = storage === "postgres" || storage === "mysql";
    test(`${storage}: three processes, 100 increments each, none lost`, { skip: server ? serversMissing : undefined }, async () => {
      const config = server ? (servers[storage] as DatabaseServer).persistence()
        : storage === "sqlite" ? { storage, path: join(root, `race-${newId()}`, "k.db") } : { storage, path: join(root, `race-${newId()}`) };
      const p = await openPersistence(config);
      const v = volume({ sizeGiB: 0, version: 1 });
      await p.compareAndSetRecord("volume", v, 0);
      await Promise.all(["a", "b", "c"].map(() => execFileAsync(process.execPath, ["-e", script, v.id], { env: { ...process.env, KINDLING_TEST_STORE: JSON.stringify(config) } })));
      const [after] = await p.getVolumes({ id: v.id });
      assert.equal(after.sizeGiB, 300, "every increment landed");
      assert.equal(after.version, 301, "one version per change");
      await p.close();
    });
  }

  test("json: a process killed while holding the store's lock does not leave it locked", async () => {
    const dir = join(root, `json-kill-${newId()}`);
    const p = await openPersistence({ storage: "json", path: dir });
    await p.setKeyValue({ key: "k", value: "0" });
    // A child takes the lock (the SQLite database used for it) and is killed while it holds it.
    const holder = `
      const { DatabaseSync } = require("node:sqlite");
      const db = new DatabaseSync(${JSON.stringify(join(dir, ".lock"))});
      db.exec("BEGIN EXCLUSIVE");
      console.log("locked");
      setInterval(() => {}, 1000);`;
    const child = (await import("node:child_process")).spawn(process.execPath, ["-e", holder], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
    child.kill("SIGKILL");
    await new Promise((resolve) => child.once("exit", resolve));
    assert.equal(await p.compareAndSetKeyValue("k", "0", "1"), true, "the lock went with its holder");
    await p.close();
  });
});
