// Copy-on-write: on XFS with reflink, snapshots and clones share blocks with their source; on
// ext4 they are sparse copies that keep holes and report progress.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Backend, BackendError, type ProgressEvent } from "../provider/library";
import { MemoryPersistence } from "../provider/persistence/memory";
import { MiB } from "../provider/util/sizes";
import { readAt, writeAt } from "./helpers/backends";
import { isRoot } from "./helpers/env";
import { freeBytes, makeFilesystem, type LoopFilesystem } from "./helpers/filesystems";

const rootOnly = { skip: isRoot ? false : "needs root: losetup and mount" };

describe("reflink on XFS", rootOnly, () => {
  let fs: LoopFilesystem;
  let backend: Backend;
  before(async () => {
    fs = makeFilesystem("xfs", 2600);
    backend = await Backend.open({ name: "xfs", driver: "file", path: join(fs.mountpoint, "v"), copyMode: "reflink" }, { persistence: new MemoryPersistence() });
  });
  after(async () => {
    await backend?.close();
    fs?.remove();
  });

  test("snapshot and clone of 500 MiB of data take almost no space and hold the data", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1 });
    const payload = randomBytes(500 * MiB);
    await writeAt(volume, payload);
    const free = freeBytes(fs.mountpoint);
    const snapshot = await volume.createSnapshot();
    const clone = await volume.clone();
    const fromSnapshot = await snapshot.createVolume({ sizeGiB: 2 });
    const used = free - freeBytes(fs.mountpoint);
    assert.ok(used < 50 * MiB, `three copies of 500 MiB used ${used} bytes`);
    for (const copy of [clone, fromSnapshot]) assert.ok((await readAt(copy, 500 * MiB)).equals(payload));
    assert.ok((await readAt(snapshot, 500 * MiB)).equals(payload));
    // Copy-on-write: a write to the clone leaves the source alone.
    await writeAt(clone, Buffer.alloc(4096, 7));
    assert.ok((await readAt(volume, 4096)).equals(payload.subarray(0, 4096)));
    await snapshot.delete();
    for (const v of [clone, fromSnapshot, volume]) await v.delete();
  });
});

describe("copies on ext4", rootOnly, () => {
  let fs: LoopFilesystem;
  before(() => {
    fs = makeFilesystem("ext4", 1500);
  });
  after(() => fs?.remove());

  test("copyMode reflink refuses on a filesystem without it and leaves nothing", async () => {
    const pool = join(fs.mountpoint, "strict");
    const backend = await Backend.open({ name: "strict", driver: "file", path: pool, copyMode: "reflink" }, { persistence: new MemoryPersistence() });
    try {
      const volume = await backend.createVolume({ sizeGiB: 1 });
      await assert.rejects(volume.createSnapshot(), (e: unknown) => e instanceof BackendError && /cannot reflink/.test(e.message));
      await assert.rejects(volume.clone(), BackendError);
      assert.deepEqual(readdirSync(pool).filter((f) => f !== ".kindling"), [`volume-${volume.id}`]);
      assert.deepEqual(await backend.snapshots(), []);
      assert.equal((await backend.volumes()).length, 1);
      await volume.delete();
    } finally {
      await backend.close();
    }
  });

  test("auto falls back to a sparse copy that keeps holes and reports progress", async () => {
    const backend = await Backend.open({ name: "auto", driver: "file", path: join(fs.mountpoint, "auto") }, { persistence: new MemoryPersistence() });
    try {
      const volume = await backend.createVolume({ sizeGiB: 1 });
      const payload = randomBytes(10 * MiB);
      await writeAt(volume, payload, 100 * MiB);
      const events: ProgressEvent[] = [];
      backend.on("progress", (e: ProgressEvent) => events.push(e));
      const callbacks: number[] = [];
      const clone = await volume.clone({}, { onProgress: (p) => callbacks.push(p.done) });
      const allocated = statSync(clone.location as string).blocks * 512;
      assert.ok(allocated >= 10 * MiB && allocated < 20 * MiB, `the copy allocated ${allocated} bytes for 10 MiB of data`);
      assert.ok((await readAt(clone, 10 * MiB, 100 * MiB)).equals(payload));
      assert.ok((await readAt(clone, 4096, 0)).equals(Buffer.alloc(4096)));
      assert.ok(callbacks.length >= 2);
      assert.equal(callbacks.at(-1), 1024 * MiB);
      assert.ok(events.length >= 2 && events.every((e) => e.operation === "clone" && e.objectId === clone.id));
      assert.equal(events.at(-1)?.done, events.at(-1)?.total);
      const snapshot = await volume.createSnapshot();
      assert.ok(statSync(snapshot.location as string).blocks * 512 < 20 * MiB);
      assert.ok((await readAt(snapshot, 10 * MiB, 100 * MiB)).equals(payload));
      await snapshot.delete();
      await clone.delete();
      await volume.delete();
    } finally {
      await backend.close();
    }
  });
});
