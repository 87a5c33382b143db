// A full filesystem during create, extend and clone: a clear NO_SPACE error, no half-made
// volume, and records that still match the files. Uses a small ext4 made on a loop device.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Backend, NoSpaceError, type Volume } from "../provider/library";
import { SqlitePersistence } from "../provider/persistence/sqlite";
import { GiB, MiB } from "../provider/util/sizes";
import { isRoot, needsRoot, removeDir, tempDir } from "./helpers/env";
import { freeBytes, makeFilesystem, type LoopFilesystem } from "./helpers/filesystems";

// Root only (losetup, mount): each test skips itself, saying why, when not root. CI runs as root.
describe("a full filesystem", () => {
  let fs: LoopFilesystem;
  let recordsDir: string;
  let backend: Backend;
  let pool: string;
  let full: Volume;
  let data: Volume;

  before(async () => {
    if (!isRoot) return;
    fs = makeFilesystem("ext4", 2300);
    recordsDir = tempDir();
    pool = join(fs.mountpoint, "volumes");
    // Records live off the small filesystem, as they would on a separate system disk.
    backend = await Backend.open({ name: "small", driver: "file", path: pool }, { persistence: new SqlitePersistence(join(recordsDir, "k.db")) });
    full = await backend.createVolume({ sizeGiB: 1, name: "full", extraSpecs: { preallocation: "full" } });
    data = await backend.createVolume({ sizeGiB: 1, name: "data" });
    const device = await data.open();
    for (let at = 0; at < 700 * MiB; at += 4 * MiB) await device.pwrite(randomBytes(4 * MiB), at);
    await device.flush();
    await device.close();
  });

  after(async () => {
    try {
      await backend?.close();
    } finally {
      try {
        fs?.remove();
      } finally {
        if (recordsDir) removeDir(recordsDir);
      }
    }
  });

  /** The volume files in the pool are exactly the volumes in the records, at their sizes. */
  async function assertRecordsMatchFiles(): Promise<void> {
    const files = readdirSync(pool).filter((f) => f.startsWith("volume-")).sort();
    const volumes = await backend.volumes();
    assert.deepEqual(volumes.map((v) => `volume-${v.id}`).sort(), files);
    for (const v of volumes) {
      assert.equal(v.status, "available");
      assert.equal(statSync(join(pool, `volume-${v.id}`)).size, v.sizeGiB * GiB);
    }
    assert.deepEqual(readdirSync(pool).filter((f) => !f.startsWith("volume-") && f !== ".kindling"), [], "no stray files");
  }

  test("the setup itself fits", async (t) => {
    if (needsRoot(t)) return;
    assert.equal(statSync(full.location as string).blocks * 512 >= GiB, true, "full preallocation took real blocks");
    await assertRecordsMatchFiles();
  });

  /** Free space comes back after a failure: nothing half-written stays allocated. */
  function assertSpaceGivenBack(before: number): void {
    const after = freeBytes(fs.mountpoint);
    assert.ok(after >= before - 16 * MiB, `free space before ${before}, after ${after}`);
  }

  for (const preallocation of ["falloc", "full"]) {
    test(`create with preallocation ${preallocation} that cannot fit: NO_SPACE, no file, no record`, async (t) => {
      if (needsRoot(t)) return;
      const free = freeBytes(fs.mountpoint);
      assert.ok(free < GiB, `the filesystem is nearly full (${free} bytes free)`);
      const name = `too-big-${preallocation}`;
      await assert.rejects(backend.createVolume({ sizeGiB: 1, name, extraSpecs: { preallocation } }), (e: unknown) => {
        assert.ok(e instanceof NoSpaceError, String(e));
        assert.equal(e.code, "NO_SPACE");
        assert.match(e.message, /no space left/);
        return true;
      });
      await assert.rejects(backend.getVolume(name), /not found/);
      await assertRecordsMatchFiles();
      assertSpaceGivenBack(free);
    });
  }

  test("a sparse create of the same size still fits: thin provisioning", async (t) => {
    if (needsRoot(t)) return;
    const volume = await backend.createVolume({ sizeGiB: 1, name: "thin" });
    assert.equal(statSync(volume.location as string).size, GiB);
    await assertRecordsMatchFiles();
    await volume.delete();
    await assertRecordsMatchFiles();
  });

  test("extend past the free space: NO_SPACE, size unchanged in the record and on disk", async (t) => {
    if (needsRoot(t)) return;
    const free = freeBytes(fs.mountpoint);
    await assert.rejects(full.extend(2), (e: unknown) => e instanceof NoSpaceError && e.code === "NO_SPACE");
    const record = await backend.getVolume("full");
    assert.equal(record.sizeGiB, 1);
    assert.equal(record.status, "available");
    assert.equal(statSync(full.location as string).size, GiB);
    assert.equal((await full.inspect()).sizeGiB, 1);
    await assertRecordsMatchFiles();
    assertSpaceGivenBack(free);
  });

  test("a device opened while a failing extend has grown the file has the recorded size: no reads past the real end (D1)", async (t) => {
    if (needsRoot(t)) return;
    const file = full.location as string;
    let settled = false;
    const outcome = full.extend(2).then(() => undefined, (e: unknown) => e).finally(() => (settled = true));
    // The extend grows the file first, then writes zeroes until the space runs out and gives the
    // growth back. A client connecting in between (an NBD export opening the device) was told
    // the grown size, and its reads past the rolled-back end returned other memory.
    while (!settled && statSync(file).size <= GiB) await new Promise((r) => setImmediate(r));
    assert.equal(settled, false, "the device is opened while the file is grown");
    const device = await full.open({ readOnly: true });
    try {
      assert.ok((await outcome) instanceof NoSpaceError, "the extend ran out of space");
      assert.equal(statSync(file).size, GiB, "and was rolled back");
      assert.equal(device.size, GiB, "the device has the size the records hold, not the grown file's");
      const buffer = Buffer.alloc(MiB, "OTHER-TENANT-DATA-");
      assert.equal(await device.pread(buffer, GiB - MiB), MiB);
      assert.ok(buffer.equals(Buffer.alloc(MiB)), "the thick volume's last MiB reads as its zeroes");
    } finally {
      await device.close();
    }
    assert.equal((await backend.getVolume("full")).status, "available");
    await assertRecordsMatchFiles();
  });

  test("clone that runs out of space midway: NO_SPACE, no partial file, no record", async (t) => {
    if (needsRoot(t)) return;
    const free = freeBytes(fs.mountpoint);
    assert.ok(free < 700 * MiB, `less free space (${free}) than the clone needs`);
    await assert.rejects(data.clone({ name: "clone" }), (e: unknown) => e instanceof NoSpaceError && e.code === "NO_SPACE");
    await assert.rejects(backend.getVolume("clone"), /not found/);
    await assertRecordsMatchFiles();
    assertSpaceGivenBack(free);
  });

  test("snapshot that runs out of space: NO_SPACE, nothing left", async (t) => {
    if (needsRoot(t)) return;
    await assert.rejects(data.createSnapshot({ name: "snap" }), NoSpaceError);
    assert.deepEqual(await backend.snapshots(), []);
    assert.deepEqual(readdirSync(pool).filter((f) => f.startsWith("snapshot-")), []);
    await assertRecordsMatchFiles();
  });
});
