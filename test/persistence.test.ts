// One contract, every plugin: memory, json, sqlite, and a custom module.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdirSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { DatabaseSync } from "node:sqlite";
import { after, describe, test } from "node:test";
import { InvalidInputError } from "../provider/util/errors";
import { openPersistence, type Persistence, type SnapshotRecord, type VolumeRecord, type ConnectionRecord } from "../provider/persistence";
import { SqlitePersistence } from "../provider/persistence/sqlite";
import { newId } from "../provider/util/ids";
import { listTree, removeDir, tempDir } from "./helpers/env";

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
  return { class: "Connection", id: newId(), backend: "b1", volumeId, protocol: "local", connector: { host: "h" }, connectionInfo: { protocol: "local", data: { device_path: "/x" } }, attachMode: "rw", createdAt: "2026-01-01T00:00:00.000Z", updatedAt: "2026-01-01T00:00:00.000Z" };
}

const customModule = join(root, "custom-plugin.js");
writeFileSync(customModule, `
  const { MemoryPersistence } = require(${JSON.stringify(resolve(__dirname, "..", "provider", "persistence", "memory"))});
  exports.createPersistence = (options) => Object.assign(new MemoryPersistence(), { kind: "custom", options });
`);

const plugins: Record<string, () => Promise<Persistence>> = {
  memory: () => openPersistence({ storage: "memory" }),
  json: () => openPersistence({ storage: "json", path: join(root, `json-${newId()}`) }),
  sqlite: () => openPersistence({ storage: "sqlite", path: join(root, `sqlite-${newId()}`, "k.db") }),
  custom: () => openPersistence({ storage: "custom", module: "./custom-plugin.js", options: { a: 1 } }, { baseDir: root }),
};

for (const [kind, open] of Object.entries(plugins)) {
  describe(`${kind} persistence`, () => {
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
    assert.ok(files.every((f) => /^(volumes|keyvalues)(\/[0-9a-f-]+\.json)?$/.test(f)), files.join(","));
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
