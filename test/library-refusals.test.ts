// Refusals that protect data: deleting what is still used, shrinking, attaching twice, reusing
// an id, and stale handles of deleted objects. Each refusal leaves the volume as it was.
import assert from "node:assert/strict";
import { existsSync, statSync } from "node:fs";
import { unlink } from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import { Backend, ConflictError, InUseError, InvalidInputError, NotFoundError, type Persistence } from "../provider/library";
import { GiB } from "../provider/util/sizes";
import { loopBackingFile } from "../provider/attach/loop";
import { fileBackend, readAt, writeAt } from "./helpers/backends";
import { PATTERN, listTree, needsRoot, removeDir } from "./helpers/env";

describe("refusals", () => {
  let backend: Backend;
  let dir: string;
  let persistence: Persistence;
  before(async () => ({ backend, dir, persistence } = await fileBackend("sqlite")));
  after(async () => {
    try {
      // Whatever a failed test left connected must not keep a loop device.
      if (backend) for (const c of await backend.connections()) await c.disconnect().catch(() => undefined);
      await backend?.close();
    } finally {
      if (dir) removeDir(dir);
    }
  });

  test("a volume with snapshots is not deleted", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, name: "has-snapshots" });
    const snapshot = await volume.createSnapshot({ name: "keep" });
    await assert.rejects(volume.delete(), (e: unknown) => e instanceof InUseError && e.code === "IN_USE" && /keep/.test(e.message));
    const still = await backend.getVolume("has-snapshots");
    assert.equal(still.status, "available");
    assert.ok(existsSync(volume.location as string));
    assert.ok((await backend.volumes()).some((v) => v.id === volume.id));
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
      assert.equal((await volume.connections()).length, 1, "the refused attach left no connection");
      assert.equal((await backend.getVolume(volume.id)).status, "in-use");
    } finally {
      await volume.detach();
    }
    await volume.delete();
  });

  test("two attaches at once: one device, the other refused", async (t) => {
    if (needsRoot(t)) return;
    const volume = await backend.createVolume({ sizeGiB: 1, name: "raced" });
    const results = await Promise.allSettled([volume.attach(), volume.attach(), volume.attach()]);
    try {
      const won = results.filter((r) => r.status === "fulfilled");
      const lost = results.filter((r) => r.status === "rejected");
      assert.equal(won.length, 1, "exactly one attach succeeds");
      for (const r of lost) assert.ok(r.reason instanceof InUseError, String(r.reason));
      const connections = await volume.connections();
      assert.equal(connections.length, 1);
      assert.ok(statSync(connections[0].devicePath as string).isBlockDevice());
    } finally {
      for (const c of await volume.connections()) await c.disconnect();
    }
    assert.deepEqual(await volume.connections(), []);
    await volume.delete();
  });

  test("a stale connection handle never releases a device it no longer owns", async (t) => {
    if (needsRoot(t)) return;
    const v = await backend.createVolume({ sizeGiB: 1, name: "stale-v" });
    const w = await backend.createVolume({ sizeGiB: 1, name: "stale-w" });
    const first = await v.attach();
    const stale = (await v.connections())[0];
    assert.equal(stale.devicePath, first.devicePath);
    await v.detach();
    // The freed loop device is usually handed straight to the next attach.
    const other = await w.attach();
    try {
      await stale.detach();
      await stale.disconnect();
      assert.equal(await loopBackingFile(other.devicePath as string), w.location, "w's device is still attached to w");
      assert.deepEqual((await w.connections()).map((c) => c.devicePath), [other.devicePath]);
      assert.deepEqual(await v.connections(), [], "the stale handle did not bring its connection back");
      assert.equal((await backend.getVolume(v.id)).status, "available");
      await v.delete();
    } finally {
      await w.detach();
    }
    await w.delete();
  });

  test("a connected volume is not deleted; disconnect makes it available again", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, name: "connected" });
    const connection = await volume.connect("local", {}, { attachMode: "ro" });
    assert.equal(connection.connectionInfo.data.device_path, volume.location);
    assert.equal(connection.connectionInfo.data.access_mode, "ro");
    assert.equal((await backend.getVolume(volume.id)).status, "in-use");
    await assert.rejects(volume.delete(), InUseError);
    assert.ok(existsSync(volume.location as string));
    await volume.disconnect();
    assert.equal((await backend.getVolume(volume.id)).status, "available");
    await volume.delete();
  });

  test("volumes only grow: extend to the same or a smaller size names sizeGiB", async () => {
    const volume = await backend.createVolume({ sizeGiB: 2 });
    for (const size of [2, 1]) {
      await assert.rejects(volume.extend(size), (e: unknown) => e instanceof InvalidInputError && e.field === "sizeGiB" && /2 GiB/.test(e.message));
    }
    for (const size of [0, -1, 2.5]) {
      await assert.rejects(volume.extend(size), (e: unknown) => e instanceof InvalidInputError && e.field === "sizeGiB");
    }
    assert.equal((await volume.inspect()).sizeGiB, 2);
    assert.equal((await backend.getVolume(volume.id)).sizeGiB, 2);
    assert.equal((await backend.getVolume(volume.id)).status, "available");
    await assert.rejects(volume.clone({ sizeGiB: 1 }), (e: unknown) => e instanceof InvalidInputError && e.field === "sizeGiB");
    await volume.delete();
  });

  test("the status machine: a volume that is not available or in-use is not copied, grown, connected or opened", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, name: "broken" });
    for (const status of ["error", "creating", "deleting"] as const) {
      // As a failed create or another process would leave it (a live lease would make callers wait).
      const [record] = await persistence.getVolumes({ id: volume.id });
      await persistence.setVolume({ ...record, status, lease: undefined, version: (record.version ?? 1) + 1 });
      const handle = await backend.getVolume(volume.id);
      if (status === "error") {
        for (const [what, attempt] of [
          ["snapshot", () => handle.createSnapshot({ name: "x" })],
          ["clone", () => handle.clone({ name: "x" })],
          ["extend", () => handle.extend(2)],
          ["connect", () => handle.connect("local")],
        ] as Array<[string, () => Promise<unknown>]>) {
          await assert.rejects(attempt(), (e: unknown) => e instanceof InvalidInputError && e.field === "volume" && /is error/.test(e.message), what);
        }
        assert.deepEqual(await backend.snapshots(volume.id), []);
        assert.equal((await backend.volumes()).length, 1, "nothing was made");
      } else {
        await assert.rejects(handle.open(), (e: unknown) => e instanceof InvalidInputError && new RegExp(`is ${status}`).test(e.message), `open while ${status}`);
      }
    }
    // An error volume (and one left creating by nobody alive) can always be deleted.
    await (await backend.getVolume(volume.id)).delete();
    await assert.rejects(backend.getVolume(volume.id), NotFoundError);
  });

  test("names are unique per backend", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, name: "unique" });
    const tree = listTree(dir);
    await assert.rejects(backend.createVolume({ sizeGiB: 1, name: "unique" }), (e: unknown) => e instanceof ConflictError && e.field === "name");
    await assert.rejects(volume.clone({ name: "unique" }), ConflictError);
    assert.equal((await backend.volumes()).filter((v) => v.name === "unique").length, 1);
    // The SQLite files may change; the volume files must not.
    assert.deepEqual(listTree(dir).filter((f) => f.includes("volume-")), tree.filter((f) => f.includes("volume-")));
    await volume.delete();
  });

  test("a taken id is refused and the volume or snapshot holding it is untouched", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, name: "owner" });
    await writeAt(volume, PATTERN);
    const snapshot = await volume.createSnapshot({ name: "owner-snap" });
    const other = await backend.createVolume({ sizeGiB: 2, name: "other" });
    // A refused operation still took and gave back the lease of its source (two versions up);
    // what the record says of the object must not change.
    const content = <T extends { version?: number }>(record: T) => ({ ...record, version: undefined });
    const before = content(volume.dump());
    const snapshotBefore = content(snapshot.dump());

    const attempts: Array<[string, () => Promise<unknown>]> = [
      ["create", () => backend.createVolume({ sizeGiB: 3, name: "thief", id: volume.id })],
      ["clone", () => other.clone({ name: "thief", id: volume.id })],
      ["from snapshot", () => snapshot.createVolume({ name: "thief", id: volume.id })],
      ["snapshot", () => other.createSnapshot({ name: "thief", id: snapshot.id })],
    ];
    for (const [what, attempt] of attempts) {
      await assert.rejects(attempt(), (e: unknown) => e instanceof ConflictError && e.field === "id", what);
      assert.deepEqual(content((await backend.getVolume(volume.id)).dump()), before, `${what}: the owner's record is unchanged`);
      assert.deepEqual(content((await backend.getSnapshot(snapshot.id)).dump()), snapshotBefore, `${what}: the snapshot's record is unchanged`);
      assert.equal(statSync(volume.location as string).size, GiB, `${what}: the owner's file is still there`);
      assert.ok(existsSync(snapshot.location as string), `${what}: the snapshot's file is still there`);
      assert.deepEqual(await readAt(volume, PATTERN.length), PATTERN, `${what}: the owner's data is intact`);
      await assert.rejects(backend.getVolume("thief"), NotFoundError);
    }
    await snapshot.delete();
    await volume.delete();
    await other.delete();
  });

  test("a stale handle of a deleted volume or snapshot cannot bring its record back", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, name: "gone" });
    const snapshot = await volume.createSnapshot({ name: "gone-snap" });
    const staleSnapshot = await backend.getSnapshot(snapshot.id);
    await snapshot.delete();
    await assert.rejects(staleSnapshot.update({ description: "x" }), NotFoundError);
    await assert.rejects(staleSnapshot.createVolume(), NotFoundError);
    await staleSnapshot.delete(); // deleting again is fine
    assert.deepEqual(await backend.snapshots(), []);

    const stale = await backend.getVolume(volume.id);
    await volume.delete();
    await assert.rejects(stale.extend(2), NotFoundError);
    await assert.rejects(stale.update({ description: "x" }), NotFoundError);
    await assert.rejects(stale.createSnapshot(), NotFoundError);
    await assert.rejects(stale.clone(), NotFoundError);
    await assert.rejects(stale.connect("local"), NotFoundError);
    await stale.delete(); // deleting again is fine
    assert.ok(!(await backend.volumes()).some((v) => v.id === volume.id), "no ghost record");
    assert.deepEqual(await backend.snapshots(), []);
    assert.deepEqual(await backend.connections(), []);
    assert.ok(!listTree(dir).some((f) => f.includes(volume.id)));
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
    await unlink(volume.location as string);
    assert.deepEqual(await volume.inspect(), { exists: false });
    assert.equal((await backend.getVolume(volume.id)).status, "available", "persistence still remembers it");
    await assert.rejects(volume.extend(2), NotFoundError);
    assert.equal((await backend.getVolume(volume.id)).sizeGiB, 1, "a failed extend leaves the size");
    assert.equal((await backend.getVolume(volume.id)).status, "available", "and the status");
    await volume.delete();
    await assert.rejects(backend.getVolume(volume.id), NotFoundError);
  });
});
