// cinderlib's functional scenarios (tests/functional/test_basic.py), on the file backend, once
// with memory persistence (stateless) and once with SQLite (the embedded default).
import assert from "node:assert/strict";
import { existsSync, statSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { InvalidInputError, type Backend, type Volume } from "../provider/library";
import { GiB } from "../provider/util/sizes";
import { loopBackingFile } from "../provider/attach/loop";
import { fileBackend, readAt, writeAt, type PersistenceKind } from "./helpers/backends";
import { PATTERN, deviceSize, listTree, lsblkSize, needsRoot, readRange, removeDir, writeDevice } from "./helpers/env";

for (const kind of ["memory", "sqlite"] as PersistenceKind[]) {
  describe(`cinderlib scenarios on the file backend (${kind} persistence)`, () => {
    let backend: Backend;
    let dir: string;

    before(async () => {
      ({ backend, dir } = await fileBackend(kind));
    });

    // Teardown as cinderlib's: snapshots, then detach, disconnect and delete each volume. Errors
    // are collected and reported together, after the loop devices and the directory are gone.
    after(async () => {
      const errors: unknown[] = [];
      const attempt = async (work: () => Promise<unknown>) => {
        try {
          await work();
        } catch (err) {
          errors.push(err);
        }
      };
      if (backend) {
        await attempt(async () => {
          for (const snapshot of await backend.snapshots()) await attempt(() => snapshot.delete());
          for (const volume of await backend.volumes()) {
            for (const c of await volume.connections()) await attempt(() => c.disconnect());
            await attempt(() => volume.delete());
          }
        });
        await attempt(() => backend.close());
      }
      if (dir) removeDir(dir);
      if (errors.length) throw new AggregateError(errors, `teardown failed: ${errors.map(String).join("; ")}`);
    });

    async function createVolume(sizeGiB = 1, name?: string): Promise<Volume> {
      const volume = await backend.createVolume({ sizeGiB, name });
      assert.equal(volume.status, "available");
      assert.equal(volume.sizeGiB, sizeGiB);
      assert.equal(volume.name, name ?? volume.id, "the name given, or the id by default");
      assert.ok((await backend.volumes()).some((v) => v.id === volume.id), "listed in backend.volumes()");
      return volume;
    }

    test("stats", async () => {
      const stats = await backend.stats();
      assert.equal(stats.vendor_name, "kindling");
      assert.equal(stats.volume_backend_name, "test");
      assert.ok(stats.pools.length >= 1);
      for (const pool of stats.pools) {
        assert.equal(typeof pool.free_capacity_gb, "number");
        assert.equal(typeof pool.total_capacity_gb, "number");
        assert.ok((pool.total_capacity_gb as number) > 0);
      }
    });

    test("stats with creation: cached until refreshed", async () => {
      const initial = await backend.stats(true);
      await createVolume(3);
      assert.deepEqual(await backend.stats(false), initial, "stats(false) is the cached value");
      const refreshed = await backend.stats(true);
      assert.equal(refreshed.pools[0].total_volumes, initial.pools[0].total_volumes + 1);
      assert.equal(refreshed.provisioned_capacity_gb, initial.provisioned_capacity_gb + 3);
    });

    test("create volume: attached device has the volume's size", async (t) => {
      if (needsRoot(t)) return;
      const volume = await createVolume(2, `create-${kind}`);
      assert.equal(statSync(volume.location as string).size, 2 * GiB);
      const connection = await volume.attach();
      try {
        assert.equal(lsblkSize(connection.devicePath as string), 2 * GiB, "lsblk -b shows the volume's size");
        assert.equal(deviceSize(connection.devicePath as string), 2 * GiB);
      } finally {
        await volume.detach();
      }
    });

    test("create and delete volume; deleting again succeeds", async () => {
      const volume = await createVolume();
      const file = volume.location as string;
      assert.ok(existsSync(file));
      await volume.delete();
      assert.equal(volume.status, "deleted");
      assert.equal(volume.deleted, true);
      assert.ok(!(await backend.volumes()).some((v) => v.id === volume.id));
      assert.ok(!existsSync(file));
      await volume.delete();
      assert.equal(volume.status, "deleted");
    });

    test("create snapshot", async () => {
      const volume = await createVolume();
      const snapshot = await volume.createSnapshot({ name: `snap-${kind}` });
      assert.equal(snapshot.status, "available");
      assert.equal(snapshot.volumeSizeGiB, volume.sizeGiB);
      assert.equal(snapshot.name, `snap-${kind}`);
      assert.ok((await volume.snapshots()).some((s) => s.id === snapshot.id));
    });

    test("create and delete snapshot; deleting again succeeds", async () => {
      const volume = await createVolume();
      const snapshot = await volume.createSnapshot();
      await snapshot.delete();
      assert.equal(snapshot.deleted, true);
      assert.ok(!(await volume.snapshots()).some((s) => s.id === snapshot.id));
      assert.ok(!existsSync(snapshot.location as string));
      await snapshot.delete();
      assert.equal(snapshot.status, "deleted");
    });

    test("attach volume", async (t) => {
      if (needsRoot(t)) return;
      const volume = await createVolume();
      const connection = await volume.attach();
      try {
        assert.ok((await volume.connections()).some((c) => c.id === connection.id));
        assert.match(connection.devicePath as string, /^\/dev\/loop\d+$/);
        assert.ok(statSync(connection.devicePath as string).isBlockDevice());
        assert.equal(volume.status, "in-use");
      } finally {
        await volume.detach();
      }
    });

    test("attach and detach volume", async (t) => {
      if (needsRoot(t)) return;
      const volume = await createVolume();
      const connection = await volume.attach();
      await volume.detach();
      assert.equal(await volume.localAttachment(), undefined);
      assert.deepEqual(await volume.connections(), []);
      assert.equal((await backend.getVolume(volume.id)).status, "available");
      assert.notEqual(await loopBackingFile(connection.devicePath as string), volume.location, "the loop device is released");
    });

    test("attach and detach via the connection", async (t) => {
      if (needsRoot(t)) return;
      const volume = await createVolume();
      const connection = await volume.attach();
      await connection.detach();
      assert.equal(connection.attached, false);
      assert.equal(await volume.localAttachment(), undefined);
      assert.ok((await volume.connections()).some((c) => c.id === connection.id), "still connected after detach");
      await connection.disconnect();
      assert.deepEqual(await volume.connections(), []);
    });

    test("disk I/O through the attached device", async (t) => {
      if (needsRoot(t)) return;
      const volume = await createVolume();
      const connection = await volume.attach();
      try {
        writeDevice(connection.devicePath as string, PATTERN);
        assert.deepEqual(readRange(connection.devicePath as string, PATTERN.length), PATTERN);
      } finally {
        await volume.detach();
      }
      assert.deepEqual(await readAt(volume, PATTERN.length), PATTERN, "the data is in the volume");
    });

    test("extend, through a volume loaded from persistence", async () => {
      const volume = await createVolume();
      const fresh = await backend.getVolume(volume.id);
      const bytes = await fresh.extend(volume.sizeGiB + 1);
      assert.equal(bytes, 2 * GiB);
      assert.equal(fresh.sizeGiB, 2);
      assert.equal((await backend.getVolume(volume.id)).sizeGiB, 2);
      assert.equal(statSync(volume.location as string).size, 2 * GiB);
      assert.equal((await fresh.inspect()).sizeGiB, 2);
    });

    test("extend while attached: the device shows the new size", async (t) => {
      if (needsRoot(t)) return;
      const volume = await createVolume();
      const connection = await volume.attach();
      try {
        const bytes = await volume.extend(3);
        assert.equal(bytes, 3 * GiB);
        assert.equal(volume.sizeGiB, 3);
        assert.equal(volume.status, "in-use");
        assert.equal(deviceSize(connection.devicePath as string), 3 * GiB);
        assert.equal(lsblkSize(connection.devicePath as string), 3 * GiB);
        assert.equal((await backend.getVolume(volume.id)).sizeGiB, 3, "the record has the new size");
      } finally {
        await volume.detach();
      }
    });

    test("clone keeps the data", async () => {
      const volume = await createVolume();
      await writeAt(volume, PATTERN, 12345);
      const clone = await volume.clone({ name: `clone-${kind}` });
      assert.equal(clone.sizeGiB, volume.sizeGiB);
      assert.equal(clone.sourceVolumeId, volume.id);
      assert.equal(clone.status, "available");
      assert.equal(statSync(clone.location as string).size, statSync(volume.location as string).size);
      assert.deepEqual(await readAt(clone, PATTERN.length, 12345), PATTERN);
      const larger = await volume.clone({ sizeGiB: 2 });
      assert.equal((await larger.inspect()).sizeGiB, 2);
      assert.deepEqual(await readAt(larger, PATTERN.length, 12345), PATTERN);
    });

    test("volume from snapshot holds the data as it was at snapshot time", async () => {
      const volume = await createVolume(2);
      await writeAt(volume, PATTERN);
      const snapshot = await volume.createSnapshot();
      const reversed = Buffer.from(PATTERN).reverse();
      await writeAt(volume, reversed);
      const restored = await snapshot.createVolume();
      assert.equal(restored.sizeGiB, volume.sizeGiB);
      assert.equal(restored.snapshotId, snapshot.id);
      assert.deepEqual(await readAt(restored, PATTERN.length), PATTERN);
      assert.deepEqual(await readAt(volume, PATTERN.length), reversed);
      const bigger = await snapshot.createVolume({ sizeGiB: 3 });
      assert.equal(bigger.sizeGiB, 3);
      assert.equal(statSync(bigger.location as string).size, 3 * GiB);
      assert.deepEqual(await readAt(bigger, PATTERN.length), PATTERN);
      // Smaller than the snapshot would cut data off: refused, and nothing is made.
      const tree = listTree(dir);
      const count = (await backend.volumes()).length;
      await assert.rejects(snapshot.createVolume({ sizeGiB: 1 }), (e: unknown) => e instanceof InvalidInputError && e.field === "sizeGiB");
      assert.deepEqual(listTree(dir), tree);
      assert.equal((await backend.volumes()).length, count);
    });
  });
}
