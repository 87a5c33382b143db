// Refusals that protect data, status changes, update in place, and the dump()/load() round trip
// of the stateless mode.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { Backend, Connection, InUseError, InvalidInputError, Snapshot, Volume } from "../provider/library";
import { MemoryPersistence } from "../provider/persistence/memory";
import { fileBackend, readAt, writeAt } from "./helpers/backends";
import { PATTERN, needsRoot, removeDir } from "./helpers/env";

describe("refusals", () => {
  let backend: Backend;
  let dir: string;
  before(async () => ({ backend, dir } = await fileBackend("sqlite")));
  after(async () => {
    await backend.close();
    removeDir(dir);
  });

  test("a volume with snapshots is not deleted", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, name: "has-snapshots" });
    const snapshot = await volume.createSnapshot({ name: "keep" });
    await assert.rejects(volume.delete(), (e: unknown) => e instanceof InUseError && /keep/.test(e.message));
    assert.equal((await backend.getVolume("has-snapshots")).status, "available");
    assert.ok(existsSync(volume.location as string));
    await snapshot.delete();
    await volume.delete();
    assert.ok(!existsSync(volume.location as string));
  });

  test("an attached volume is not deleted, and not attached twice", async (t) => {
    if (needsRoot(t)) return;
    const volume = await backend.createVolume({ sizeGiB: 1, name: "attached" });
    const connection = await volume.attach();
    try {
      await assert.rejects(volume.delete(), (e: unknown) => e instanceof InUseError && e.message.includes(connection.devicePath as string));
      await assert.rejects(volume.attach(), InUseError);
      assert.ok(existsSync(volume.location as string));
    } finally {
      await volume.detach();
    }
    await volume.delete();
  });

  test("a connected volume is not deleted; disconnect makes it available again", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, name: "connected" });
    const connection = await volume.connect("local", {}, { attachMode: "ro" });
    assert.equal(connection.connectionInfo.data.device_path, volume.location);
    assert.equal(connection.connectionInfo.data.access_mode, "ro");
    assert.equal((await backend.getVolume(volume.id)).status, "in-use");
    await assert.rejects(volume.delete(), InUseError);
    await volume.disconnect();
    assert.equal((await backend.getVolume(volume.id)).status, "available");
    await volume.delete();
  });

  test("volumes only grow", async () => {
    const volume = await backend.createVolume({ sizeGiB: 2 });
    for (const size of [2, 1]) {
      await assert.rejects(volume.extend(size), (e: unknown) => e instanceof InvalidInputError && e.field === "sizeGiB" && /2 GiB/.test(e.message));
    }
    assert.equal((await volume.inspect()).sizeGiB, 2);
    await assert.rejects(volume.clone({ sizeGiB: 1 }), (e: unknown) => e instanceof InvalidInputError && e.field === "sizeGiB");
    await volume.delete();
  });

  test("names are unique per backend", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, name: "unique" });
    await assert.rejects(backend.createVolume({ sizeGiB: 1, name: "unique" }), /already exists/);
    assert.equal((await backend.volumes()).filter((v) => v.name === "unique").length, 1);
    await volume.delete();
  });

  test("QoS specs are stored, returned in connection info, and updated in place", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, qosSpecs: { read_iops_sec: 100, write_bytes_sec: "1048576" } as never });
    assert.deepEqual(volume.qosSpecs, { read_iops_sec: "100", write_bytes_sec: "1048576" });
    const connection = await volume.connect("local");
    assert.deepEqual(connection.connectionInfo.data.qos_specs, { read_iops_sec: "100", write_bytes_sec: "1048576" });
    await volume.disconnect();
    await volume.update({ description: "now described", metadata: { team: "db" }, qosSpecs: { total_iops_sec: "50" } });
    const reread = await backend.getVolume(volume.id);
    assert.equal(reread.description, "now described");
    assert.deepEqual(reread.metadata, { team: "db" });
    assert.deepEqual(reread.qosSpecs, { total_iops_sec: "50" });
    await volume.delete();
  });

  test("a volume file removed by hand: inspect tells the truth, delete still succeeds", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1 });
    await import("node:fs/promises").then((fs) => fs.unlink(volume.location as string));
    assert.deepEqual(await volume.inspect(), { exists: false });
    assert.equal((await backend.getVolume(volume.id)).status, "available", "persistence still remembers it");
    await volume.delete();
    await assert.rejects(backend.getVolume(volume.id), /not found/);
  });
});

describe("dump and load (stateless mode)", () => {
  test("every object round-trips, and a fresh process-like backend restores them", async () => {
    const { backend, dir } = await fileBackend("memory");
    try {
      const volume = await backend.createVolume({ sizeGiB: 1, name: "v", metadata: { a: "b" }, extraSpecs: { preallocation: "off" } });
      await writeAt(volume, PATTERN);
      const snapshot = await volume.createSnapshot({ name: "s" });
      const connection = await volume.connect("local", {});

      assert.deepEqual(Volume.load(backend, volume.dump()).dump(), volume.dump());
      assert.deepEqual(Snapshot.load(backend, snapshot.dump()).dump(), snapshot.dump());
      assert.deepEqual(Connection.load(backend, connection.dump()).dump(), connection.dump());
      assert.deepEqual(JSON.parse(JSON.stringify(volume)), volume.dump(), "JSON.stringify gives the dump");

      const dump = JSON.stringify(await backend.dump());
      // A new backend over the same directory, with empty memory persistence: what a Pulumi
      // program does with the records it kept in its state.
      const again = await Backend.open({ name: "test", driver: "file", path: `${dir}/volumes` }, { persistence: new MemoryPersistence() });
      assert.deepEqual(await again.volumes(), []);
      const objects = await again.load(dump, { save: true });
      assert.equal(objects.length, 3);
      const restored = await again.getVolume("v");
      assert.deepEqual(restored.dump(), (await backend.getVolume("v")).dump());
      assert.deepEqual(await readAt(restored, PATTERN.length), PATTERN);
      assert.equal((await again.getSnapshot("s")).id, snapshot.id);
      await assert.rejects(restored.delete(), InUseError, "the restored connection still guards the volume");
      await restored.disconnect();
      await (await again.getSnapshot("s")).delete();
      await restored.delete();
      assert.ok(!existsSync(volume.location as string));
      await assert.rejects(again.load([{ ...volume.dump(), backend: "other" }]), (e: unknown) => e instanceof InvalidInputError && e.field === "backend");
      await again.close();
    } finally {
      await backend.close();
      removeDir(dir);
    }
  });
});
