// dump()/load(): every object round-trips, and the stateless mode (memory persistence, the caller
// keeps the JSON, as Pulumi state does) restores a backend that works on the same data.
import assert from "node:assert/strict";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Backend, Connection, InUseError, InvalidInputError, Snapshot, Volume, type BackendDump } from "../provider/library";
import { MemoryPersistence } from "../provider/persistence/memory";
import { GiB } from "../provider/util/sizes";
import { fileBackend, readAt, writeAt } from "./helpers/backends";
import { PATTERN, removeDir } from "./helpers/env";

describe("dump and load", () => {
  let backend: Backend;
  let dir: string;
  let volume: Volume;
  let snapshot: Snapshot;
  let connection: Connection;

  before(async () => {
    ({ backend, dir } = await fileBackend("memory"));
    volume = await backend.createVolume({ sizeGiB: 1, name: "v", description: "d", metadata: { a: "b" }, extraSpecs: { preallocation: "off" }, qosSpecs: { read_iops_sec: "10" } });
    await writeAt(volume, PATTERN);
    snapshot = await volume.createSnapshot({ name: "s", metadata: { when: "before" } });
    connection = await volume.connect("local", {}, { attachMode: "ro" });
  });
  after(async () => {
    await backend?.close();
    if (dir) removeDir(dir);
  });

  test("Volume, Snapshot and Connection: load(dump()) deep-equals, also through JSON text", () => {
    for (const [object, load] of [
      [volume, (r: unknown) => Volume.load(backend, r as never)],
      [snapshot, (r: unknown) => Snapshot.load(backend, r as never)],
      [connection, (r: unknown) => Connection.load(backend, r as never)],
    ] as const) {
      const dumped = object.dump();
      const loaded = load(dumped);
      assert.deepEqual(loaded.dump(), dumped);
      assert.deepEqual(load(JSON.parse(JSON.stringify(object))).dump(), dumped, "JSON.stringify gives the dump");
      assert.equal(loaded.id, object.id);
      // The dump is a copy: changing it does not change the object.
      (dumped as { id: string }).id = "changed";
      assert.notEqual(object.id, "changed");
    }
    const v = Volume.load(backend, volume.dump());
    assert.equal(v.name, "v");
    assert.equal(v.sizeGiB, 1);
    assert.deepEqual(v.metadata, { a: "b" });
    assert.deepEqual(v.qosSpecs, { read_iops_sec: "10" });
    assert.equal(v.status, "in-use");
    assert.equal(Snapshot.load(backend, snapshot.dump()).volumeId, volume.id);
    assert.equal(Connection.load(backend, connection.dump()).attachMode, "ro");
  });

  test("a record of the wrong class is refused", () => {
    assert.throws(() => Volume.load(backend, snapshot.dump() as never), (e: unknown) => e instanceof InvalidInputError && e.field === "class");
    assert.throws(() => Snapshot.load(backend, volume.dump() as never), (e: unknown) => e instanceof InvalidInputError && e.field === "class");
    assert.throws(() => Connection.load(backend, volume.dump() as never), (e: unknown) => e instanceof InvalidInputError && e.field === "class");
  });

  test("Backend.dump() holds every record", async () => {
    const dump = await backend.dump();
    assert.equal(dump.class, "Backend");
    assert.equal(dump.name, "test");
    assert.equal(dump.driver, "file");
    assert.deepEqual(dump.records.map((r) => r.id).sort(), [volume.id, snapshot.id, connection.id].sort());
    assert.deepEqual(dump.records.find((r) => r.id === volume.id), (await backend.getVolume(volume.id)).dump());
  });

  test("stateless restore: load(json, { save: true }) into a fresh memory persistence", async () => {
    const json = JSON.stringify(await backend.dump());
    const original = JSON.parse(json) as BackendDump;
    // A new backend over the same directory, with empty memory persistence: what a Pulumi
    // program does with the records it kept in its state.
    const again = await Backend.open({ name: "test", driver: "file", path: join(dir, "volumes") }, { persistence: new MemoryPersistence() });
    try {
      assert.deepEqual(await again.volumes(), []);

      // Without save, objects come back but persistence stays empty.
      const unsaved = await again.load(json);
      assert.equal(unsaved.length, 3);
      assert.deepEqual(await again.volumes(), []);

      const objects = await again.load(json, { save: true });
      assert.deepEqual(objects.map((o) => o.dump()), original.records, "loaded objects deep-equal the dumped records");
      assert.deepEqual(objects.map((o) => o.constructor.name), original.records.map((r) => r.class));
      assert.deepEqual((await again.dump()).records.sort(byId), [...original.records].sort(byId), "and so does the restored backend's dump");

      // Operations on the loaded objects work on the same data.
      const restored = await again.getVolume("v");
      assert.deepEqual(await readAt(restored, PATTERN.length), PATTERN);
      const restoredSnapshot = await again.getSnapshot("s");
      assert.deepEqual(await readAt(await restoredSnapshot.createVolume({ name: "from-s" }), PATTERN.length), PATTERN);
      await assert.rejects(restored.delete(), InUseError, "the restored connection still guards the volume");
      await restored.disconnect();
      assert.equal((await again.getVolume("v")).status, "available");
      assert.equal(await restored.extend(2), 2 * GiB);
      assert.equal(statSync(volume.location as string).size, 2 * GiB);
      const clone = await restored.clone({ name: "c" });
      assert.deepEqual(await readAt(clone, PATTERN.length), PATTERN);
      assert.equal(clone.sourceVolumeId, volume.id);

      await (await again.getSnapshot("s")).delete();
      assert.ok(!existsSync(snapshot.location as string));
      for (const v of await again.volumes()) await v.delete();
      assert.ok(!existsSync(volume.location as string));
      assert.deepEqual(await again.volumes(), []);
    } finally {
      await again.close();
    }
  });

  test("records of another backend, or of no known class, are refused", async () => {
    const other = await Backend.open({ name: "other", driver: "file", path: join(dir, "other") }, { persistence: new MemoryPersistence() });
    try {
      await assert.rejects(other.load([volume.dump()], { save: true }), (e: unknown) => e instanceof InvalidInputError && e.field === "backend");
      await assert.rejects(other.load({ ...volume.dump(), backend: "other", class: "Widget" }), (e: unknown) => e instanceof InvalidInputError && e.field === "class");
      assert.deepEqual(await other.volumes(), [], "nothing was saved");
    } finally {
      await other.close();
    }
  });
});

function byId(a: { id: string }, b: { id: string }): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
