// The rbd driver against a real single-node Ceph cluster, checked from the admin's side: config
// refusals, extra specs and QoS as Ceph applies them, clone depth and dependent clones, several
// pools, inspect() as the truth, connection info a real librbd consumer (qemu-img) can use, and
// the key kept out of errors and logs.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Backend, BackendError, InUseError, InvalidInputError, KindlingError, loadConfig, openBackends, type BackendConfig, type Volume } from "../provider/library";
import { MemoryPersistence } from "../provider/persistence/memory";
import { SqlitePersistence } from "../provider/persistence/sqlite";
import { GiB, MiB } from "../provider/util/sizes";
import { readAt, writeAt } from "./helpers/backends";
import { CephCluster, cephMissing } from "./helpers/ceph";
import { kindling } from "./helpers/cli";
import { PATTERN, removeDir, tempDir } from "./helpers/env";

interface ImageInfo {
  size: number;
  features: string[];
  object_size: number;
  stripe_unit?: number;
  stripe_count?: number;
  data_pool?: string;
  parent?: { pool: string; image: string; snapshot: string };
}

interface SnapInfo {
  name: string;
  size: number;
  protected: string;
}

interface ConfigEntry {
  name: string;
  value: string;
  source: string;
}

const skip = cephMissing();
let cluster: CephCluster | undefined;
/** Every backend a test opened, closed at the end even when the test failed halfway. */
const opened: Backend[] = [];
/** Where backends without an explicit persistence would put their records: must stay empty. */
const dataHomeDir = tempDir("kindling-rbd-home-");
const previousXdg = process.env.XDG_DATA_HOME;

before(async () => {
  process.env.XDG_DATA_HOME = dataHomeDir;
  if (!skip) cluster = await CephCluster.start(["volumes", "other"]);
});

after(async () => {
  for (const backend of opened) await backend.close().catch(() => undefined);
  if (cluster) {
    cluster.stop();
    removeDir(dirname(cluster.dir));
  }
  if (previousXdg === undefined) delete process.env.XDG_DATA_HOME;
  else process.env.XDG_DATA_HOME = previousXdg;
  removeDir(dataHomeDir);
});

function ceph(): CephCluster {
  assert.ok(cluster, "the Ceph cluster is up");
  return cluster;
}

const images = (pool: string) => ceph().rbdJson<string[]>(["ls", pool]).sort();
const imageInfo = (spec: string) => ceph().rbdJson<ImageInfo>(["info", spec]);
const snapNames = (image: string) => ceph().rbdJson<SnapInfo[]>(["snap", "ls", image]).map((s) => s.name);
const spec = (volume: Volume, pool = "volumes") => `${pool}/volume-${volume.id}`;

async function open(extra: Record<string, unknown> = {}, name = "rbd"): Promise<Backend> {
  const backend = await Backend.open(ceph().backend(name, extra) as unknown as BackendConfig, { persistence: new MemoryPersistence() });
  opened.push(backend);
  return backend;
}

/** Every error the tests provoked, swept once more for the key by the last tests. */
const seenErrors: unknown[] = [];

function assertKeyFree(err: unknown, key: string): void {
  const parts: string[] = [];
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 10; e = (e as { cause?: unknown }).cause, depth++) {
    const k = e as { message?: string; stack?: string; stderr?: string; command?: string; hint?: string };
    parts.push(String(k.message), String(k.stack), String(k.stderr ?? ""), String(k.command ?? ""), String(k.hint ?? ""));
  }
  const text = parts.join("\n");
  assert.ok(key.length > 10, "a real key to look for");
  assert.ok(!text.includes(key), `the key appears in an error: ${text.slice(0, 300)}`);
}

/** Awaits a promise that must fail; the error (key-free) comes back for closer checks. */
async function failure(work: Promise<unknown>): Promise<KindlingError> {
  let result: unknown;
  try {
    result = await work;
  } catch (err) {
    seenErrors.push(err);
    assertKeyFree(err, ceph().key);
    assert.ok(err instanceof KindlingError, `a typed kindling error, not ${String(err)}`);
    return err;
  }
  assert.fail(`expected a failure, got ${JSON.stringify(result)}`);
}

function assertInvalid(err: KindlingError, field: string | RegExp): void {
  assert.ok(err instanceof InvalidInputError, `InvalidInputError, not ${err.name}: ${err.message}`);
  if (typeof field === "string") assert.equal(err.field, field, err.message);
  else assert.match(err.field ?? "", field, err.message);
  assert.ok(err.message.includes(err.field as string), `the message names the field: ${err.message}`);
}

/** A pattern in two places of one image: the start, and one in another RBD object. */
async function writePattern(volume: Volume): Promise<void> {
  await writeAt(volume, PATTERN, 0);
  await writeAt(volume, PATTERN, 300 * MiB);
}

async function assertPattern(volume: Volume, what: string): Promise<void> {
  assert.deepEqual(await readAt(volume, PATTERN.length, 0), PATTERN, `${what}: data at offset 0`);
  assert.deepEqual(await readAt(volume, PATTERN.length, 300 * MiB), PATTERN, `${what}: data at 300 MiB`);
}

/** The key directories left under a KINDLING_RUNTIME_DIR. */
function keyDirs(runtime: string): string[] {
  return existsSync(join(runtime, "keys")) ? readdirSync(join(runtime, "keys")) : [];
}

/**
 * Runs `work` with KINDLING_RUNTIME_DIR pointing at a directory of its own and returns the key
 * directories left in it: a refused setup must not leave one behind.
 */
async function leftInTmp(work: () => Promise<void>): Promise<string[]> {
  const privateTmp = tempDir("kindling-rbd-tmp-");
  const previous = process.env.KINDLING_RUNTIME_DIR;
  process.env.KINDLING_RUNTIME_DIR = privateTmp;
  try {
    await work();
    return keyDirs(privateTmp);
  } finally {
    if (previous === undefined) delete process.env.KINDLING_RUNTIME_DIR;
    else process.env.KINDLING_RUNTIME_DIR = previous;
    removeDir(privateTmp);
  }
}

describe("rbd driver: configuration", { skip }, () => {
  const refusals: Array<[string, (base: Record<string, unknown>) => Record<string, unknown>, string | RegExp]> = [
    ["pool and pools both", (b) => ({ ...b, pools: { fast: "volumes" } }), "backend.pool"],
    ["neither pool nor pools", ({ pool: _p, ...b }) => b, "backend.pool"],
    ["neither cephConf nor monHost", ({ monHost: _m, ...b }) => b, "backend.monHost"],
    ["a malformed key", (b) => ({ ...b, key: "not a key!" }), "backend.key"],
    ["key and keyring both", (b) => ({ ...b, keyring: ceph().keyring }), "backend.key"],
    ["an unknown setting", (b) => ({ ...b, colour: "red" }), "backend.colour"],
    ["a pool name Ceph tools would not take", (b) => ({ ...b, pool: "../volumes" }), "backend.pool"],
    ["an empty pools map", ({ pool: _p, ...b }) => ({ ...b, pools: {} }), "backend.pools"],
  ];
  for (const [what, make, field] of refusals) {
    test(`refused, naming the field: ${what}`, async () => {
      const before = images("volumes");
      const err = await failure(Backend.open(make(ceph().backend("refused")) as unknown as BackendConfig));
      assertInvalid(err, field);
      assert.deepEqual(images("volumes"), before, "nothing created in the cluster");
      assert.deepEqual(readdirSync(dataHomeDir), [], "no records store made");
    });
  }

  test("a keyring file without a section for the user is refused, naming keyring", async () => {
    const dir = tempDir();
    try {
      const keyring = join(dir, "other.keyring");
      writeFileSync(keyring, `[client.someone-else]\n\tkey = ${ceph().key}\n`, { mode: 0o600 });
      const { key: _key, ...base } = ceph().backend("keyring-wrong");
      const left = await leftInTmp(async () => {
        const err = await failure(Backend.open({ ...base, keyring } as unknown as BackendConfig));
        assertInvalid(err, /(^|\.)keyring$/);
        assert.match(err.message, /client\.kindling/, "says whose key is missing");
      });
      assert.deepEqual(left, [], "no private directory left behind");
      assert.deepEqual(readdirSync(dataHomeDir), [], "no records store made");
    } finally {
      removeDir(dir);
    }
  });

  test("a pool the cluster does not have: setup refuses naming pool, nothing created, no key file left", async () => {
    const left = await leftInTmp(async () => {
      const err = await failure(Backend.open(ceph().backend("no-pool", { pool: "nosuchpool" }) as unknown as BackendConfig));
      assertInvalid(err, "pool");
      assert.match(err.message, /nosuchpool/);
      const multi = await failure(Backend.open(ceph().backend("no-pool2", { pool: undefined, pools: { fast: "volumes", gone: "nosuchpool" } }) as unknown as BackendConfig));
      assertInvalid(multi, "pools.gone");
    });
    assert.deepEqual(left, [], "no directory holding the key is left behind");
    assert.deepEqual(readdirSync(dataHomeDir), [], "no records store made");
    const pools = JSON.parse(ceph().admin("ceph", ["osd", "pool", "ls", "--format", "json"])) as string[];
    assert.ok(!pools.includes("nosuchpool"), "the missing pool was not created either");
  });

  test("key files a killed process left behind are removed by the next backend to start", async () => {
    // A pid that is surely gone: a process that has exited.
    const dead = spawnSync("true").pid as number;
    const left = await leftInTmp(async () => {
      const stale = join(process.env.KINDLING_RUNTIME_DIR as string, "keys", `rbd-${dead}-stale`);
      mkdirSync(stale, { recursive: true });
      writeFileSync(join(stale, "key"), "stale", { mode: 0o600 });
      const backend = await Backend.open(ceph().backend("sweeper") as unknown as BackendConfig, { persistence: new MemoryPersistence() });
      try {
        assert.ok(!existsSync(stale), "the dead process's key directory is gone");
        assert.equal(keyDirs(process.env.KINDLING_RUNTIME_DIR as string).length, 1, "and this backend's own is there");
      } finally {
        await backend.close();
      }
    });
    assert.deepEqual(left, []);
  });

  test("a backend configured with keyring works like one with key; close() removes its key file", async () => {
    const left = await leftInTmp(async () => {
      const { key: _key, ...base } = ceph().backend("by-keyring");
      const backend = await Backend.open({ ...base, keyring: ceph().keyring } as unknown as BackendConfig, { persistence: new MemoryPersistence() });
      opened.push(backend);
      assert.equal(keyDirs(process.env.KINDLING_RUNTIME_DIR as string).length, 1, "the key file lives in the runtime dir while the backend is open");
      try {
        await useKeyringBackend(backend);
      } finally {
        await backend.close();
      }
    });
    assert.deepEqual(left, [], "nothing holding the key is left once the backend is closed");
  });

  async function useKeyringBackend(backend: Backend): Promise<void> {
    const volume = await backend.createVolume({ sizeGiB: 1 });
    assert.ok(images("volumes").includes(`volume-${volume.id}`));
    await writeAt(volume, PATTERN, 4096);
    assert.deepEqual(await readAt(volume, PATTERN.length, 4096), PATTERN);
    const snapshot = await volume.createSnapshot();
    assert.ok(snapNames(spec(volume)).includes(`snapshot-${snapshot.id}`));
    const connection = await volume.connect("rbd", { host: "consumer" });
    assert.equal(connection.connectionInfo.data.key, ceph().key, "the key read from the keyring is what consumers get");
    await connection.disconnect();
    await snapshot.delete();
    await volume.delete();
    assert.ok(!images("volumes").includes(`volume-${volume.id}`));
  }
});

describe("rbd driver: extra specs", { skip }, () => {
  let backend: Backend;
  before(async () => {
    backend = await open({}, "specs");
  });

  test("features are applied", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, extraSpecs: { features: "layering,exclusive-lock" } });
    assert.deepEqual(imageInfo(spec(volume)).features.sort(), ["exclusive-lock", "layering"]);
    const full = await backend.createVolume({ sizeGiB: 1, extraSpecs: { features: "layering,exclusive-lock,object-map,fast-diff" } });
    assert.deepEqual(imageInfo(spec(full)).features.sort(), ["exclusive-lock", "fast-diff", "layering", "object-map"]);
    await volume.delete();
    await full.delete();
  });

  test("stripe_unit with stripe_count, and object_size", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, extraSpecs: { stripe_unit: "64K", stripe_count: "4", object_size: "8M" } });
    const info = imageInfo(spec(volume));
    assert.equal(info.stripe_unit, 64 * 1024);
    assert.equal(info.stripe_count, 4);
    assert.equal(info.object_size, 8 * MiB);
    assert.ok(info.features.includes("striping"));
    const small = await backend.createVolume({ sizeGiB: 1, extraSpecs: { object_size: "1M" } });
    assert.equal(imageInfo(spec(small)).object_size, MiB);
    // Data goes through the striping layout and comes back the same.
    await writeAt(volume, PATTERN, 3 * MiB + 1000);
    assert.deepEqual(await readAt(volume, PATTERN.length, 3 * MiB + 1000), PATTERN);
    await volume.delete();
    await small.delete();
  });

  test("data_pool puts the data objects in another pool", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, extraSpecs: { data_pool: "other" } });
    const info = imageInfo(spec(volume));
    assert.equal(info.data_pool, "other");
    assert.ok(info.features.includes("data-pool"));
    assert.ok(!images("other").includes(`volume-${volume.id}`), "the image header stays in the volume's pool");
    await volume.delete();
  });

  const invalid: Array<[string, Record<string, string>, string]> = [
    ["an unknown feature", { features: "layering,teleport" }, "extraSpecs.features"],
    ["fast-diff without object-map", { features: "layering,exclusive-lock,fast-diff" }, "extraSpecs.features"],
    ["object-map without exclusive-lock", { features: "layering,object-map" }, "extraSpecs.features"],
    ["stripe_unit alone", { stripe_unit: "64K" }, "extraSpecs.stripe_unit"],
    ["stripe_count alone", { stripe_count: "4" }, "extraSpecs.stripe_unit"],
    ["object_size not a power of two", { object_size: "3M" }, "extraSpecs.object_size"],
    ["object_size too large", { object_size: "64M" }, "extraSpecs.object_size"],
    ["stripe_unit larger than object_size", { stripe_unit: "8M", stripe_count: "2" }, "extraSpecs.stripe_unit"],
    ["an unknown spec key", { colour: "red" }, "extraSpecs.colour"],
    ["a data_pool the cluster does not have", { data_pool: "nosuchpool" }, "extraSpecs.data_pool"],
  ];
  for (const [what, extraSpecs, field] of invalid) {
    test(`refused before anything is made: ${what}`, async () => {
      const before = images("volumes");
      const err = await failure(backend.createVolume({ sizeGiB: 1, extraSpecs }));
      assertInvalid(err, field);
      assert.deepEqual(images("volumes"), before, "no image created");
      assert.deepEqual(await backend.volumes(), [], "no record created");
    });
  }
});

describe("rbd driver: QoS specs become librbd limits", { skip }, () => {
  test("set on create, one changed and the other removed on update", async () => {
    const backend = await open({}, "qos");
    const qosOf = (volume: Volume) =>
      Object.fromEntries(ceph().rbdJson<ConfigEntry[]>(["config", "image", "list", spec(volume)]).filter((e) => e.name.startsWith("rbd_qos_") && e.name.endsWith("_limit")).map((e) => [e.name, e]));
    const volume = await backend.createVolume({ sizeGiB: 1, qosSpecs: { total_iops_sec: "500", read_bytes_sec: "10485760" } });
    let qos = qosOf(volume);
    assert.deepEqual({ value: qos.rbd_qos_iops_limit.value, source: qos.rbd_qos_iops_limit.source }, { value: "500", source: "image" });
    assert.deepEqual({ value: qos.rbd_qos_read_bps_limit.value, source: qos.rbd_qos_read_bps_limit.source }, { value: "10485760", source: "image" });
    assert.equal(qos.rbd_qos_bps_limit.source, "config", "limits not asked for stay at the default");

    await volume.update({ qosSpecs: { total_iops_sec: "200" } });
    qos = qosOf(volume);
    assert.deepEqual({ value: qos.rbd_qos_iops_limit.value, source: qos.rbd_qos_iops_limit.source }, { value: "200", source: "image" });
    assert.equal(qos.rbd_qos_read_bps_limit.source, "config", "the limit no longer asked for is gone from the image");
    assert.equal(qos.rbd_qos_read_bps_limit.value, "0");
    assert.deepEqual((await backend.getVolume(volume.id)).qosSpecs, { total_iops_sec: "200" });

    const err = await failure(volume.update({ qosSpecs: { total_iops_sec: "-3" } }));
    assertInvalid(err, "qosSpecs.total_iops_sec");
    assert.equal(qosOf(volume).rbd_qos_iops_limit.value, "200", "a refused update changes nothing");
    await volume.delete();
  });
});

describe("rbd driver: clone depth", { skip }, () => {
  test("maxCloneDepth 2: copy-on-write until the depth is reached, then the new clone is flattened", async () => {
    const backend = await open({ maxCloneDepth: 2 }, "depth2");
    const base = await backend.createVolume({ sizeGiB: 1 });
    await writePattern(base);
    const first = await base.clone();
    const second = await first.clone();
    const third = await second.clone();
    assert.equal(imageInfo(spec(first)).parent?.image, `volume-${base.id}`, "depth 1: copy-on-write");
    assert.equal(imageInfo(spec(first)).parent?.snapshot, `clone-${first.id}`);
    assert.equal(imageInfo(spec(second)).parent?.image, `volume-${first.id}`, "depth 2: copy-on-write");
    assert.equal(imageInfo(spec(third)).parent, undefined, "depth 3 would pass the maximum: flattened");
    assert.ok(!snapNames(spec(second)).includes(`clone-${third.id}`), "the flattened clone's snapshot on its source is gone");
    await assertPattern(third, "the flattened clone");
    await assertPattern(second, "the copy-on-write clone");
    for (const v of [third, second, first, base]) await v.delete();
    for (const v of [third, second, first, base]) assert.ok(!images("volumes").includes(`volume-${v.id}`));
  });

  test("maxCloneDepth 0: every clone and volume from a snapshot is a full copy", async () => {
    const backend = await open({ maxCloneDepth: 0 }, "depth0");
    const base = await backend.createVolume({ sizeGiB: 1 });
    await writePattern(base);
    const clone = await base.clone();
    assert.equal(imageInfo(spec(clone)).parent, undefined);
    assert.deepEqual(snapNames(spec(base)), [], "no clone snapshot kept on the source");
    const snapshot = await base.createSnapshot();
    const fromSnapshot = await snapshot.createVolume();
    assert.equal(imageInfo(spec(fromSnapshot)).parent, undefined);
    await assertPattern(clone, "the copied clone");
    await assertPattern(fromSnapshot, "the copied volume from a snapshot");
    await fromSnapshot.delete();
    await clone.delete();
    await snapshot.delete();
    await base.delete();
  });
});

describe("rbd driver: dependent clones", { skip }, () => {
  test("flatten (default): deleting a snapshot flattens the volume made from it", async () => {
    const backend = await open({}, "flatten-snap");
    const source = await backend.createVolume({ sizeGiB: 1 });
    await writePattern(source);
    const snapshot = await source.createSnapshot();
    const child = await snapshot.createVolume();
    assert.equal(imageInfo(spec(child)).parent?.snapshot, `snapshot-${snapshot.id}`, "made copy-on-write");
    // The source changes after the snapshot: the child must keep the snapshot's data.
    await writeAt(source, Buffer.alloc(PATTERN.length, 0x55), 0);
    await snapshot.delete();
    assert.equal(imageInfo(spec(child)).parent, undefined, "the child was flattened");
    assert.ok(!snapNames(spec(source)).includes(`snapshot-${snapshot.id}`), "the snapshot is gone from Ceph");
    assert.deepEqual(await backend.snapshots(), [], "and from the records");
    await assertPattern(child, "the flattened child");
    await child.delete();
    await source.delete();
  });

  test("flatten (default): deleting a volume flattens its clone; deleting a clone drops its snapshot", async () => {
    const backend = await open({}, "flatten-vol");
    const source = await backend.createVolume({ sizeGiB: 1 });
    await writePattern(source);
    const clone = await source.clone();
    assert.deepEqual(snapNames(spec(source)), [`clone-${clone.id}`], "a hidden snapshot holds the clone");
    await source.delete();
    assert.ok(!images("volumes").includes(`volume-${source.id}`), "the source image is gone");
    assert.equal(imageInfo(spec(clone)).parent, undefined, "the clone was flattened");
    await assertPattern(clone, "the flattened clone");

    const other = await backend.createVolume({ sizeGiB: 1 });
    const otherClone = await other.clone();
    assert.deepEqual(snapNames(spec(other)), [`clone-${otherClone.id}`]);
    await otherClone.delete();
    assert.deepEqual(snapNames(spec(other)), [], "the clone's hidden snapshot went with it");
    await other.delete();
    await clone.delete();
    assert.deepEqual(await backend.volumes(), []);
  });

  test("refuse: deleting a snapshot or volume that clones depend on fails naming them; nothing is lost", async () => {
    const backend = await open({ dependentClones: "refuse" }, "refuse");
    const source = await backend.createVolume({ sizeGiB: 1 });
    const snapshot = await source.createSnapshot();
    const child = await snapshot.createVolume();
    const snapErr = await failure(snapshot.delete());
    assert.ok(snapErr instanceof InUseError, `${snapErr.name}: ${snapErr.message}`);
    assert.match(snapErr.message, new RegExp(`volume-${child.id}`), "names the dependent image");
    assert.ok(snapNames(spec(source)).includes(`snapshot-${snapshot.id}`), "the snapshot is still in Ceph");
    assert.equal((await backend.getSnapshot(snapshot.id)).id, snapshot.id, "and its record is still there");
    assert.equal(imageInfo(spec(child)).parent?.snapshot, `snapshot-${snapshot.id}`, "the child was not flattened");

    const other = await backend.createVolume({ sizeGiB: 1 });
    const clone = await other.clone();
    const volErr = await failure(other.delete());
    assert.ok(volErr instanceof InUseError, `${volErr.name}: ${volErr.message}`);
    assert.match(volErr.message, new RegExp(`volume-${clone.id}`));
    assert.ok(images("volumes").includes(`volume-${other.id}`), "the volume is still in Ceph");
    assert.equal((await backend.getVolume(other.id)).id, other.id, "and its record is still there");
    assert.equal(imageInfo(spec(clone)).parent?.image, `volume-${other.id}`, "the clone was not flattened");

    // Once the dependents are gone, the refused deletes go through.
    await child.delete();
    await snapshot.delete();
    await clone.delete();
    await other.delete();
    await source.delete();
    assert.deepEqual(await backend.volumes(), []);
    assert.deepEqual(await backend.snapshots(), []);
  });
  test("a refused delete leaves the status as it was, so the volume and snapshot stay usable", async () => {
    const backend = await open({ dependentClones: "refuse" }, "refuse-status");
    const source = await backend.createVolume({ sizeGiB: 1 });
    const snapshot = await source.createSnapshot();
    const child = await snapshot.createVolume();
    const clone = await source.clone();
    try {
      await failure(snapshot.delete());
      await failure(source.delete());
      assert.equal((await backend.getSnapshot(snapshot.id)).status, "available");
      assert.equal((await backend.getVolume(source.id)).status, "available");
      const another = await snapshot.createVolume();
      await another.delete();
      const connection = await source.connect("rbd", {});
      await connection.disconnect();
    } finally {
      await child.delete();
      await clone.delete();
      await snapshot.delete();
      await source.delete();
    }
  });
});

describe("rbd driver: several pools", { skip }, () => {
  test("pools from a configuration file are Ceph pool names, not paths", async () => {
    const dir = tempDir();
    try {
      const { name: _name, ...entry } = ceph().backend("ceph", { pool: undefined, pools: { fast: "volumes", slow: "other" } });
      const file = join(dir, "kindling.json");
      writeFileSync(file, JSON.stringify({ persistence: { storage: "memory" }, backends: { ceph: entry } }), { mode: 0o600 });
      const set = await openBackends(loadConfig({ path: file }));
      try {
        const stats = await set.get("ceph").stats(true);
        assert.deepEqual(stats.pools.map((p) => [p.pool_name, p.location_info]), [["fast", "rbd:volumes"], ["slow", "rbd:other"]]);
      } finally {
        await set.close();
      }
    } finally {
      removeDir(dir);
    }
  });

  test("stats per pool with the Cinder keys; a volume lands in its pool's Ceph pool", async () => {
    const backend = await open({ pool: undefined, pools: { fast: "volumes", slow: "other" } }, "multi");
    const stats = await backend.stats(true);
    for (const key of ["volume_backend_name", "vendor_name", "driver_version", "storage_protocol", "total_capacity_gb", "free_capacity_gb", "reserved_percentage", "thin_provisioning_support", "max_over_subscription_ratio", "provisioned_capacity_gb", "pools"]) {
      assert.ok(key in stats, `stats has ${key}`);
    }
    assert.equal(stats.volume_backend_name, "multi");
    assert.deepEqual(stats.pools.map((p) => p.pool_name), ["fast", "slow"]);
    for (const pool of stats.pools) {
      for (const key of ["total_capacity_gb", "free_capacity_gb", "reserved_percentage", "thin_provisioning_support", "max_over_subscription_ratio", "provisioned_capacity_gb"]) {
        assert.ok(key in pool, `pool ${pool.pool_name} has ${key}`);
      }
      assert.equal(typeof pool.total_capacity_gb, "number");
      assert.ok((pool.total_capacity_gb as number) > 0);
    }
    const slow = await backend.createVolume({ sizeGiB: 3, pool: "slow" });
    assert.equal(slow.pool, "slow");
    assert.ok(images("other").includes(`volume-${slow.id}`), "in Ceph pool other");
    assert.ok(!images("volumes").includes(`volume-${slow.id}`));
    const fast = await backend.createVolume({ sizeGiB: 1 });
    assert.equal(fast.pool, "fast", "the first pool is the default");
    assert.ok(images("volumes").includes(`volume-${fast.id}`));
    const after = await backend.stats(true);
    const slowStats = after.pools.find((p) => p.pool_name === "slow");
    assert.equal(slowStats?.total_volumes, 1);
    assert.equal(slowStats?.provisioned_capacity_gb, 3);
    const err = await failure(backend.createVolume({ sizeGiB: 1, pool: "volumes" }));
    assertInvalid(err, "pool");
    await slow.delete();
    await fast.delete();
    assert.ok(!images("other").includes(`volume-${slow.id}`));
  });
});

describe("rbd driver: inspect() is the truth", { skip }, () => {
  test("a volume resized and then deleted by hand", async () => {
    const backend = await open({}, "inspect");
    const volume = await backend.createVolume({ sizeGiB: 1 });
    assert.deepEqual(await volume.inspect(), { exists: true, sizeBytes: GiB, sizeGiB: 1, location: spec(volume) });
    ceph().admin("rbd", ["resize", "--size", "2G", "--no-progress", spec(volume)]);
    const grown = await volume.inspect();
    assert.equal(grown.sizeBytes, 2 * GiB);
    assert.equal(grown.sizeGiB, 2);
    assert.equal((await backend.getVolume(volume.id)).sizeGiB, 1, "the record keeps what kindling made");
    ceph().admin("rbd", ["rm", "--no-progress", spec(volume)]);
    assert.deepEqual(await volume.inspect(), { exists: false });
    assert.equal((await backend.getVolume(volume.id)).status, "available", "the record is untouched");
    await volume.delete();
    assert.deepEqual(await backend.volumes(), [], "deleting what is already gone succeeds");
  });

  test("a snapshot deleted by hand", async () => {
    const backend = await open({}, "inspect-snap");
    const volume = await backend.createVolume({ sizeGiB: 1 });
    const snapshot = await volume.createSnapshot();
    const seen = await snapshot.inspect();
    assert.equal(seen.exists, true);
    assert.equal(seen.sizeBytes, GiB);
    ceph().admin("rbd", ["snap", "rm", "--no-progress", `${spec(volume)}@snapshot-${snapshot.id}`]);
    assert.deepEqual(await snapshot.inspect(), { exists: false });
    assert.equal((await backend.getSnapshot(snapshot.id)).status, "available", "the record is untouched");
    await snapshot.delete();
    await volume.delete();
    assert.deepEqual(await backend.snapshots(), []);
    assert.deepEqual(await backend.volumes(), []);
  });
});

describe("rbd driver: connections", { skip }, () => {
  test("connection info for protocol rbd works for qemu-img through librbd", async () => {
    const backend = await open({}, "connect");
    const volume = await backend.createVolume({ sizeGiB: 2 });
    const connection = await volume.connect("rbd", { host: "consumer-host" });
    const data = connection.connectionInfo.data as Record<string, unknown>;
    assert.equal(connection.connectionInfo.driver_volume_type, "rbd");
    assert.deepEqual(data.monitors, [ceph().monHost]);
    assert.equal(data.pool, "volumes");
    assert.equal(data.image, `volume-${volume.id}`);
    assert.equal(data.auth_username, "kindling");
    assert.equal(data.key, ceph().key);
    assert.equal((await backend.getVolume(volume.id)).status, "in-use");

    // A consumer gets the key in a file of its own, never on its command line.
    const keyDir = mkdtempSync(join(tmpdir(), "kindling-rbd-key-"));
    try {
      const keyFile = join(keyDir, "key");
      writeFileSync(keyFile, String(data.key), { mode: 0o600 });
      const [host, port] = String((data.monitors as string[])[0]).split(":");
      const target = { driver: "rbd", pool: data.pool, image: data.image, user: data.auth_username, server: [{ host, port }], "key-secret": "s" };
      const r = spawnSync("qemu-img", ["info", "--output", "json", "--object", `secret,id=s,file=${keyFile},format=base64`, `json:${JSON.stringify(target)}`], { encoding: "utf8", timeout: 120_000 });
      assert.equal(r.status, 0, `qemu-img info failed: ${r.stderr}`);
      assert.equal((JSON.parse(r.stdout) as { "virtual-size": number })["virtual-size"], 2 * GiB);
    } finally {
      removeDir(keyDir);
    }
    await connection.disconnect();
    await volume.delete();
  });

  test("records keep the key masked; a connection read back from them still gives it to consumers", async () => {
    const dir = tempDir();
    const db = join(dir, "records.db");
    const backend = await Backend.open(ceph().backend("masked") as unknown as BackendConfig, { persistence: new SqlitePersistence(db) });
    try {
      const volume = await backend.createVolume({ sizeGiB: 1 });
      const connection = await volume.connect("rbd", {});
      assert.equal(connection.connectionInfo.data.key, ceph().key, "the consumer gets the key");
      assert.equal(connection.dump().connectionInfo.data.key, "[secret]", "the record does not");
      const onDisk = readdirSync(dir).map((f) => readFileSync(join(dir, f)).toString("latin1")).join("");
      assert.ok(onDisk.includes(connection.id), "the records were written (the check below looks at the right files)");
      assert.ok(!onDisk.includes(ceph().key), "the key is nowhere in the SQLite files");
      const [reloaded] = await backend.connections(volume.id);
      assert.equal(reloaded.connectionInfo.data.key, ceph().key, "a connection read back from the records gives the key again");
      await reloaded.disconnect();
      await volume.delete();
    } finally {
      await backend.close();
      removeDir(dir);
    }
  });

  test("connectors for protocols the driver does not serve are refused, and nothing is recorded", async () => {
    const backend = await open({}, "connect-refusals");
    const volume = await backend.createVolume({ sizeGiB: 1 });
    for (const protocol of ["iscsi", "fc", "local"]) {
      assertInvalid(await failure(Promise.resolve().then(() => backend.validateConnector(protocol, {}))), "protocol");
      assertInvalid(await failure(volume.connect(protocol, {})), "protocol");
    }
    assertInvalid(await failure(Promise.resolve().then(() => backend.validateConnector("rbd", { host: 7 }))), "connector.host");
    assert.doesNotThrow(() => backend.validateConnector("rbd", { host: "h" }));
    assert.doesNotThrow(() => backend.validateConnector("nbd", {}), "nbd is served by kindling for every backend");
    assert.deepEqual(await volume.connections(), []);
    assert.equal((await backend.getVolume(volume.id)).status, "available");
    await volume.delete();
  });
});

describe("rbd driver: the key stays secret", { skip }, () => {
  test("bin/kindling with debug logging: the key is in no log line, output or error", () => {
    const dir = tempDir();
    try {
      const { name: _name, ...entry } = ceph().backend("ceph");
      const config = join(dir, "kindling.json");
      writeFileSync(config, JSON.stringify({ persistence: { storage: "sqlite", path: join(dir, "records.db") }, backends: { ceph: entry } }), { mode: 0o600 });
      const badConfig = join(dir, "bad.json");
      writeFileSync(badConfig, JSON.stringify({ backends: { ceph: { ...entry, pool: "nosuchpool" } } }), { mode: 0o600 });
      // The runs get a runtime dir of their own: the private directory holding the key must go at exit.
      const tmp = join(dir, "tmp");
      mkdirSync(tmp);
      const env = { KINDLING_LOG_LEVEL: "debug", XDG_DATA_HOME: join(dir, "home"), KINDLING_RUNTIME_DIR: tmp };
      const runs = [
        { args: ["--config", config, "--json", "volume", "create", "logged", "--size", "1", "--qos", "total_iops_sec=100"], code: 0 },
        { args: ["--config", config, "snapshot", "create", "logged", "logged-snap"], code: 0 },
        { args: ["--config", config, "volume", "create", "logged-child", "--from-snapshot", "logged-snap"], code: 0 },
        { args: ["--config", config, "volume", "clone", "logged", "logged-clone"], code: 0 },
        { args: ["--config", config, "snapshot", "delete", "logged-snap"], code: 0 },
        { args: ["--config", config, "volume", "create", "bad", "--size", "1", "--spec", "colour=red"], code: 2 },
        // Listing reads the records only, so only a command that needs the cluster meets the bad pool.
        { args: ["--config", badConfig, "volume", "list"], code: 0 },
        { args: ["--config", badConfig, "volume", "create", "bad", "--size", "1"], code: 2 },
        { args: ["--config", config, "volume", "delete", "logged"], code: 0 },
        { args: ["--config", config, "volume", "delete", "logged-clone"], code: 0 },
        { args: ["--config", config, "volume", "delete", "logged-child"], code: 0 },
      ];
      const imagesBefore = images("volumes");
      let logLines = 0;
      for (const run of runs) {
        const r = kindling(run.args, { env });
        assert.equal(r.code, run.code, `kindling ${run.args.slice(2).join(" ")}: ${r.stderr}`);
        assert.ok(!r.stderr.includes(ceph().key), `the key is in the log or error of kindling ${run.args.slice(2).join(" ")}`);
        assert.ok(!r.stdout.includes(ceph().key), `the key is in the output of kindling ${run.args.slice(2).join(" ")}`);
        logLines += r.stderr.split("\n").filter((l) => l.startsWith("{") && l.includes('"level":20')).length;
        if (run.code !== 0) assert.match(r.stderr, /kindling: /, "the failure is explained");
        assert.deepEqual(keyDirs(tmp), [], `kindling ${run.args.slice(2).join(" ")} left a key directory`);
      }
      assert.ok(logLines > 10, `debug logging was on (${logLines} debug lines)`);
      assert.deepEqual(kindling(["--config", config, "--json", "volume", "list"], { env }).json(), [], "every record deleted");
      assert.deepEqual(images("volumes"), imagesBefore, "and every image with it");
    } finally {
      removeDir(dir);
    }
  });

  test("no error thrown in this file carried the key", () => {
    assert.ok(seenErrors.length >= 20, `errors were collected (${seenErrors.length})`);
    for (const err of seenErrors) assertKeyFree(err, ceph().key);
    assert.ok(seenErrors.every((e) => !(e instanceof BackendError) || !String(e.command ?? "").includes(ceph().key)));
  });

  test("every volume made by this file is gone from the cluster", () => {
    assert.deepEqual(images("volumes"), []);
    assert.deepEqual(images("other"), []);
  });
});
