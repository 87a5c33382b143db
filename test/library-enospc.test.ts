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
import { isRoot, removeDir, tempDir } from "./helpers/env";
import { makeFilesystem, type LoopFilesystem } from "./helpers/filesystems";

describe("a full filesystem", { skip: isRoot ? false : "needs root: losetup and mount" }, () => {
  let fs: LoopFilesystem;
  let recordsDir: string;
  let backend: Backend;
  let pool: string;
  let full: Volume;
  let data: Volume;

  before(async () => {
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
    await backend?.close();
    fs?.remove();
    if (recordsDir) removeDir(recordsDir);
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

  test("the setup itself fits", async () => {
    assert.equal(statSync(full.location as string).blocks * 512 >= GiB, true, "full preallocation took real blocks");
    await assertRecordsMatchFiles();
  });

  test("create that cannot fit: NO_SPACE, no file, no record", async () => {
    await assert.rejects(backend.createVolume({ sizeGiB: 2, name: "too-big", extraSpecs: { preallocation: "falloc" } }), (e: unknown) => {
      assert.ok(e instanceof NoSpaceError, String(e));
      assert.equal(e.code, "NO_SPACE");
      assert.match(e.message, /no space left/);
      return true;
    });
    await assert.rejects(backend.getVolume("too-big"), /not found/);
    await assertRecordsMatchFiles();
  });

  test("extend past the free space: NO_SPACE, size unchanged in the record and on disk", async () => {
    await assert.rejects(full.extend(2), NoSpaceError);
    assert.equal((await backend.getVolume("full")).sizeGiB, 1);
    assert.equal(statSync(full.location as string).size, GiB);
    await assertRecordsMatchFiles();
  });

  test("clone that runs out of space midway: NO_SPACE, no partial file, no record", async () => {
    await assert.rejects(data.clone({ name: "clone" }), NoSpaceError);
    await assert.rejects(backend.getVolume("clone"), /not found/);
    await assertRecordsMatchFiles();
  });

  test("snapshot that runs out of space: NO_SPACE, nothing left", async () => {
    await assert.rejects(data.createSnapshot({ name: "snap" }), NoSpaceError);
    assert.deepEqual(await backend.snapshots(), []);
    assert.deepEqual(readdirSync(pool).filter((f) => f.startsWith("snapshot-")), []);
    await assertRecordsMatchFiles();
  });
});
