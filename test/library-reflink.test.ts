// Copy-on-write: on XFS with reflink, snapshots and clones share blocks with their source (with
// copyMode auto, the default, and with copyMode reflink); on ext4, reflink mode refuses and auto
// makes sparse copies that keep holes and report progress.
// Root only (losetup, mount): each test skips itself, saying why, when not root. CI runs as root.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Backend, BackendError, type ProgressEvent, type Progress } from "../provider/library";
import { MemoryPersistence } from "../provider/persistence/memory";
import { MiB } from "../provider/util/sizes";
import { readAt, writeAt } from "./helpers/backends";
import { allocatedBytes, isRoot, listTree, needsRoot, sharedExtents } from "./helpers/env";
import { freeBytes, makeFilesystem, type LoopFilesystem } from "./helpers/filesystems";

describe("reflink on XFS", () => {
  let fs: LoopFilesystem | undefined;
  let auto: Backend | undefined;
  let strict: Backend | undefined;
  before(async () => {
    if (!isRoot) return;
    fs = makeFilesystem("xfs", 2600);
    auto = await Backend.open({ name: "xfs-auto", driver: "file", path: join(fs.mountpoint, "auto") }, { persistence: new MemoryPersistence() });
    strict = await Backend.open({ name: "xfs-reflink", driver: "file", path: join(fs.mountpoint, "reflink"), copyMode: "reflink" }, { persistence: new MemoryPersistence() });
  });
  after(async () => {
    try {
      await auto?.close();
      await strict?.close();
    } finally {
      fs?.remove();
    }
  });

  test("copyMode auto: snapshot and clones of 500 MiB of data share blocks and hold the data", async (t) => {
    if (needsRoot(t)) return;
    const backend = auto as Backend;
    const mountpoint = (fs as LoopFilesystem).mountpoint;
    const volume = await backend.createVolume({ sizeGiB: 1 });
    const payload = randomBytes(500 * MiB);
    await writeAt(volume, payload);
    assert.equal(sharedExtents(volume.location as string).shared, 0, "nothing shared before the snapshot");
    const free = freeBytes(mountpoint);
    const progress: Progress[] = [];
    const snapshot = await volume.createSnapshot({}, { onProgress: (p) => progress.push(p) });
    const clone = await volume.clone();
    const fromSnapshot = await snapshot.createVolume({ sizeGiB: 2 });
    const used = free - freeBytes(mountpoint);
    assert.ok(used < 50 * MiB, `three copies of 500 MiB used ${used} bytes`);
    for (const file of [volume.location, snapshot.location, clone.location, fromSnapshot.location]) {
      const { shared, total } = sharedExtents(file as string);
      assert.ok(total > 0 && shared === total, `${file}: ${shared} of ${total} extents are shared`);
    }
    assert.equal(progress.at(-1)?.done, progress.at(-1)?.total, "a reflink reports itself done");
    assert.ok((await readAt(snapshot, 500 * MiB)).equals(payload));
    for (const copy of [clone, fromSnapshot]) assert.ok((await readAt(copy, 500 * MiB)).equals(payload));
    assert.equal(statSync(fromSnapshot.location as string).size, 2 * 1024 * MiB);
    // Copy-on-write: a write to the clone leaves the source and the snapshot alone.
    await writeAt(clone, Buffer.alloc(4096, 7));
    assert.ok((await readAt(volume, 4096)).equals(payload.subarray(0, 4096)));
    assert.ok((await readAt(snapshot, 4096)).equals(payload.subarray(0, 4096)));
    assert.ok((await readAt(clone, 4096)).equals(Buffer.alloc(4096, 7)));
    await snapshot.delete();
    for (const v of [clone, fromSnapshot, volume]) await v.delete();
    assert.deepEqual(readdirSync(join(mountpoint, "auto")).filter((f) => f !== ".kindling"), []);
  });

  test("copyMode reflink works where the filesystem can", async (t) => {
    if (needsRoot(t)) return;
    const backend = strict as Backend;
    const volume = await backend.createVolume({ sizeGiB: 1 });
    const payload = randomBytes(16 * MiB);
    await writeAt(volume, payload, 64 * MiB);
    const snapshot = await volume.createSnapshot();
    const clone = await volume.clone();
    for (const file of [snapshot.location, clone.location]) {
      const { shared, total } = sharedExtents(file as string);
      assert.ok(total > 0 && shared === total, `${file}: ${shared} of ${total} extents are shared`);
    }
    assert.ok((await readAt(clone, 16 * MiB, 64 * MiB)).equals(payload));
    await snapshot.delete();
    await clone.delete();
    await volume.delete();
  });
});

describe("copies on ext4", () => {
  let fs: LoopFilesystem | undefined;
  before(() => {
    if (isRoot) fs = makeFilesystem("ext4", 1500);
  });
  after(() => fs?.remove());

  test("copyMode reflink refuses on a filesystem without it and leaves nothing", async (t) => {
    if (needsRoot(t)) return;
    const pool = join((fs as LoopFilesystem).mountpoint, "strict");
    const backend = await Backend.open({ name: "strict", driver: "file", path: pool, copyMode: "reflink" }, { persistence: new MemoryPersistence() });
    try {
      const volume = await backend.createVolume({ sizeGiB: 1 });
      await writeAt(volume, randomBytes(MiB));
      const tree = listTree(pool);
      await assert.rejects(volume.createSnapshot({ name: "s" }), (e: unknown) => {
        assert.ok(e instanceof BackendError, String(e));
        assert.equal(e.code, "BACKEND_ERROR");
        assert.match(e.message, /cannot reflink/);
        assert.match(e.message, /copyMode auto/, "the message says what to do");
        return true;
      });
      await assert.rejects(volume.clone({ name: "c" }), BackendError);
      assert.deepEqual(listTree(pool), tree, "no file was left");
      assert.deepEqual(readdirSync(pool), [`volume-${volume.id}`]);
      assert.deepEqual(await backend.snapshots(), [], "no snapshot record");
      assert.deepEqual((await backend.volumes()).map((v) => v.id), [volume.id], "no clone record");
      assert.equal((await backend.getVolume(volume.id)).status, "available");
      await volume.delete();
    } finally {
      await backend.close();
    }
  });

  test("auto falls back to a sparse copy that keeps holes and reports progress", async (t) => {
    if (needsRoot(t)) return;
    const backend = await Backend.open({ name: "auto", driver: "file", path: join((fs as LoopFilesystem).mountpoint, "auto") }, { persistence: new MemoryPersistence() });
    try {
      const volume = await backend.createVolume({ sizeGiB: 1 });
      const payload = randomBytes(10 * MiB);
      await writeAt(volume, payload, 100 * MiB);
      await writeAt(volume, payload.subarray(0, MiB), 900 * MiB);
      const sourceAllocated = allocatedBytes(volume.location as string);
      const events: ProgressEvent[] = [];
      backend.on("progress", (e: ProgressEvent) => events.push(e));
      const callbacks: Progress[] = [];
      const clone = await volume.clone({}, { onProgress: (p) => callbacks.push(p) });

      // Holes stay holes: the copy allocates about what the source does, far below 1 GiB.
      const allocated = allocatedBytes(clone.location as string);
      assert.ok(allocated >= 11 * MiB && allocated <= sourceAllocated + MiB, `the copy allocated ${allocated} bytes, the source ${sourceAllocated}`);
      assert.equal(sharedExtents(clone.location as string).shared, 0, "a real copy, not shared");
      assert.ok((await readAt(clone, 10 * MiB, 100 * MiB)).equals(payload));
      assert.ok((await readAt(clone, MiB, 900 * MiB)).equals(payload.subarray(0, MiB)));
      assert.ok((await readAt(clone, 4096, 0)).equals(Buffer.alloc(4096)));

      // Progress: the callback and the backend's events, ending with done == total.
      assert.ok(callbacks.length >= 2);
      assert.deepEqual(callbacks.at(-1), { done: 1024 * MiB, total: 1024 * MiB });
      for (let i = 1; i < callbacks.length; i++) assert.ok(callbacks[i].done >= callbacks[i - 1].done, "progress only moves forward");
      assert.equal(events.length, callbacks.length);
      assert.ok(events.every((e) => e.operation === "clone" && e.objectId === clone.id));
      assert.equal(events.at(-1)?.done, events.at(-1)?.total);

      events.length = 0;
      const snapshot = await volume.createSnapshot();
      assert.ok(allocatedBytes(snapshot.location as string) <= sourceAllocated + MiB);
      assert.ok((await readAt(snapshot, 10 * MiB, 100 * MiB)).equals(payload));
      assert.ok(events.length >= 2 && events.every((e) => e.operation === "snapshot" && e.objectId === snapshot.id));
      assert.equal(events.at(-1)?.done, events.at(-1)?.total);
      await snapshot.delete();
      await clone.delete();
      await volume.delete();
    } finally {
      await backend.close();
    }
  });
});
