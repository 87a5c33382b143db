// Several backends in one process, several pools in one backend, and configuration files.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, describe, test } from "node:test";
import { Backend, ConflictError, InvalidInputError, NotFoundError, defaultConfig, loadConfig, openBackends } from "../provider/library";
import { SqlitePersistence } from "../provider/persistence/sqlite";
import { listTree, removeDir, tempDir } from "./helpers/env";

describe("several backends", () => {
  const dir = tempDir();
  after(() => removeDir(dir));

  test("two backends of one driver in one process keep to their own directories and records", async () => {
    const a = await Backend.open({ name: "a", driver: "file", path: join(dir, "a") });
    const b = await Backend.open({ name: "b", driver: "file", path: join(dir, "b") });
    try {
      const va = await a.createVolume({ sizeGiB: 1, name: "same-name" });
      const vb = await b.createVolume({ sizeGiB: 2, name: "same-name" });
      assert.equal(dirname(va.location as string), join(dir, "a"));
      assert.equal(dirname(vb.location as string), join(dir, "b"));
      assert.deepEqual((await a.volumes()).map((v) => v.id), [va.id]);
      assert.deepEqual((await b.volumes()).map((v) => v.id), [vb.id]);
      assert.equal((await a.getVolume("same-name")).sizeGiB, 1);
      assert.equal((await b.getVolume("same-name")).sizeGiB, 2);
      // Records sit beside each backend's data by default.
      assert.ok(existsSync(join(dir, "a", ".kindling", "kindling.db")));
      assert.ok(existsSync(join(dir, "b", ".kindling", "kindling.db")));
      await va.delete();
      await vb.delete();
    } finally {
      await a.close();
      await b.close();
    }
  });

  test("two backends sharing one SQLite persistence: the same name on each, listings kept apart", async () => {
    const persistence = new SqlitePersistence(join(dir, "shared", "kindling.db"));
    const a = await Backend.open({ name: "left", driver: "file", path: join(dir, "left") }, { persistence });
    const b = await Backend.open({ name: "right", driver: "file", path: join(dir, "right") }, { persistence });
    try {
      const va = await a.createVolume({ sizeGiB: 1, name: "twin" });
      const vb = await b.createVolume({ sizeGiB: 1, name: "twin" });
      const sa = await va.createSnapshot({ name: "twin-snap" });
      const sb = await vb.createSnapshot({ name: "twin-snap" });
      await assert.rejects(a.createVolume({ sizeGiB: 1, name: "twin" }), (e: unknown) => e instanceof ConflictError && e.field === "name");
      assert.deepEqual((await a.volumes()).map((v) => v.id), [va.id]);
      assert.deepEqual((await b.volumes()).map((v) => v.id), [vb.id]);
      assert.deepEqual((await a.snapshots()).map((s) => s.id), [sa.id]);
      assert.deepEqual((await b.snapshots()).map((s) => s.id), [sb.id]);
      assert.equal((await a.getVolume("twin")).id, va.id);
      assert.equal((await b.getVolume("twin")).id, vb.id);
      await assert.rejects(a.getVolume(vb.id), NotFoundError, "one backend does not hand out the other's volume");
      assert.deepEqual(readdirSync(join(dir, "left")).sort(), [`snapshot-${sa.id}`, `volume-${va.id}`].sort());
      assert.deepEqual(readdirSync(join(dir, "right")).sort(), [`snapshot-${sb.id}`, `volume-${vb.id}`].sort());
      // Closing one backend leaves the shared persistence open for the other.
      await a.close();
      assert.equal((await b.volumes()).length, 1);
      await sb.delete();
      await vb.delete();
      await sa.delete();
      await va.delete();
      assert.deepEqual(await persistence.getVolumes(), []);
    } finally {
      await a.close();
      await b.close();
      await persistence.close();
    }
  });

  test("pools are directories; stats per pool; snapshots and clones stay in the pool", async () => {
    const pools = { fast: join(dir, "fast"), bulk: join(dir, "bulk") };
    const tiered = await Backend.open({ name: "tiered", driver: "file", pools, persistence: { storage: "memory" } });
    try {
      assert.deepEqual(tiered.poolNames(), ["fast", "bulk"]);
      const v = await tiered.createVolume({ sizeGiB: 1, pool: "bulk" });
      const def = await tiered.createVolume({ sizeGiB: 1 });
      assert.equal(dirname(v.location as string), pools.bulk);
      assert.equal(def.pool, "fast", "the first pool is the default");
      const snapshot = await v.createSnapshot();
      const clone = await v.clone();
      assert.equal(dirname(snapshot.location as string), pools.bulk);
      assert.equal(dirname(clone.location as string), pools.bulk);
      const stats = await tiered.stats(true);
      assert.deepEqual(stats.pools.map((p) => p.pool_name), ["fast", "bulk"]);
      assert.equal(stats.pools[1].total_volumes, 2);
      assert.equal(stats.pools[1].provisioned_capacity_gb, 2);
      assert.equal(stats.pools[0].total_volumes, 1);
      for (const p of stats.pools) assert.equal(p.thin_provisioning_support, true);
      await snapshot.delete();
      for (const x of [clone, v, def]) await x.delete();
    } finally {
      await tiered.close();
    }
  });
});

describe("configuration files", () => {
  const dir = tempDir();
  after(() => removeDir(dir));

  function writeConfig(name: string, config: unknown): string {
    const file = join(dir, name);
    writeFileSync(file, JSON.stringify(config));
    return file;
  }

  test("a shared persistence serves every backend; relative paths follow the file", async () => {
    const file = writeConfig("shared.json", {
      persistence: { storage: "sqlite", path: "state/kindling.db" },
      backends: { one: { driver: "file", path: "one" }, two: { driver: "file", pools: { p: "two-p" } } },
    });
    const set = await openBackends(loadConfig({ path: file }));
    try {
      assert.deepEqual(set.names(), ["one", "two"]);
      assert.throws(() => set.get(), (e: unknown) => e instanceof InvalidInputError && e.field === "backend");
      assert.throws(() => set.get("three"), /one, two/);
      await set.get("one").createVolume({ sizeGiB: 1, name: "x" });
      await set.get("two").createVolume({ sizeGiB: 1, name: "x" });
      assert.ok(existsSync(join(dir, "state", "kindling.db")));
      assert.ok(!existsSync(join(dir, "one", ".kindling")), "no per-backend records when one is shared");
      assert.equal(readdirSync(join(dir, "two-p")).filter((f) => f.startsWith("volume-")).length, 1);
      for (const name of ["one", "two"]) await (await set.get(name).getVolume("x")).delete();
    } finally {
      await set.close();
    }
  });

  test("precedence: --config, then $KINDLING_CONFIG, then ./kindling.json, then the default", () => {
    const cwd = join(dir, "cwd");
    mkdirSync(cwd, { recursive: true });
    const env = { XDG_DATA_HOME: join(dir, "xdg") };
    assert.equal(loadConfig({ cwd, env }).source, "embedded default");
    assert.deepEqual(loadConfig({ cwd, env }).config, defaultConfig(env));
    assert.equal((defaultConfig(env).backends.local as unknown as { path: string }).path, join(dir, "xdg", "kindling", "volumes"));
    const local = writeConfig("cwd/kindling.json", { backends: { here: { driver: "file", path: "v" } } });
    assert.equal(loadConfig({ cwd, env }).source, local);
    const fromEnv = writeConfig("env.json", { backends: { env: { driver: "file", path: "v" } } });
    assert.equal(loadConfig({ cwd, env: { ...env, KINDLING_CONFIG: fromEnv } }).source, fromEnv);
    const flag = writeConfig("flag.json", { backends: { flag: { driver: "file", path: "v" } } });
    assert.equal(loadConfig({ cwd, env: { ...env, KINDLING_CONFIG: fromEnv }, path: flag }).source, flag);
  });

  test("bad files name what is wrong and create nothing", async () => {
    const cases: Array<[unknown, string]> = [
      [{ backends: { local: { driver: "file", path: "v", colour: "red" } } }, "backends.local.colour"],
      [{ backends: { local: { driver: "nosuch" } } }, "backends.local.driver"],
      [{ backends: { local: { path: "v" } } }, "backends.local.driver"],
      [{ backends: {} }, "backends"],
      [{ backend: {} }, "backend"],
      [{ persistence: { storage: "sqlite" }, backends: { l: { driver: "file", path: "v" } } }, "persistence.path"],
      [{ backends: { "a/b": { driver: "file", path: "v" } } }, "backends.a/b"],
    ];
    for (const [config, field] of cases) {
      const file = writeConfig("bad.json", config);
      const before = listTree(dir);
      await assert.rejects(async () => openBackends(loadConfig({ path: file })), (e: unknown) => e instanceof InvalidInputError && e.field === field, `${JSON.stringify(config)} names ${field}`);
      assert.deepEqual(listTree(dir), before);
    }
    writeFileSync(join(dir, "broken.json"), "{ not json");
    assert.throws(() => loadConfig({ path: join(dir, "broken.json") }), /not valid JSON/);
    assert.throws(() => loadConfig({ path: join(dir, "missing.json") }), /cannot read/);
  });
});
