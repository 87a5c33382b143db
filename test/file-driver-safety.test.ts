// The file driver's safety with the pool's contents: a link (or a directory, a fifo) put where a
// volume's or snapshot's file belongs is refused and never followed out of the pool; an extend
// killed mid-way is finished by the next run; a device never returns a short read or stale
// bytes past the file's end; a file deleted by another process mid-operation is a clear
// NotFoundError. Real files, real loop devices, a real ext4 for the interrupted extend.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, readdirSync, statSync, symlinkSync, truncateSync, unlinkSync, writeFileSync, mkdirSync } from "node:fs";
import { realpath } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Backend, BackendError, InvalidInputError, NotFoundError, type Snapshot, type Volume } from "../provider/library";
import { MemoryPersistence } from "../provider/persistence/memory";
import { FileDriver } from "../provider/drivers/file/driver";
import { fileExtents } from "../provider/drivers/file/extents";
import type { DriverVolume } from "../provider/drivers/contract";
import { attachLoop, detachLoop, loopBackingFile, loopBacks } from "../provider/attach/loop";
import { newId } from "../provider/util/ids";
import { GiB, MiB } from "../provider/util/sizes";
import { fileBackend, readAt, writeAt } from "./helpers/backends";
import { allocatedBytes, isRoot, needsRoot, readRange, removeDir, sh, tempDir, writeDevice } from "./helpers/env";
import { makeFilesystem, type LoopFilesystem } from "./helpers/filesystems";

/** Loop devices whose backing file is `file` (`losetup -j`, which follows the name). */
function loopsOf(file: string): string[] {
  return sh("losetup", ["--associated", file]).split("\n").filter(Boolean).map((line) => line.split(":")[0]);
}

/** An outside file with known content, as someone with write access to the pool would aim at. */
function outsideFile(dir: string): { path: string; content: Buffer } {
  const path = join(dir, "target");
  writeFileSync(path, "precious\n");
  truncateSync(path, 4096);
  return { path, content: readFileSync(path) };
}

function assertUntouched(outside: { path: string; content: Buffer }): void {
  assert.equal(statSync(outside.path).size, 4096, "the outside file keeps its size");
  assert.ok(readFileSync(outside.path).equals(outside.content), "the outside file keeps its content");
  if (isRoot) assert.deepEqual(loopsOf(outside.path), [], "no loop device points at the outside file");
}

/** The refusal of a link in place of `kind <id>`'s file at `path`. */
function refusesLink(kind: "volume" | "snapshot", id: string, path: string) {
  return (e: unknown) => {
    assert.ok(e instanceof BackendError, String(e));
    assert.ok(
      e.message.startsWith(`${kind} ${id} (pool test): ${path} is a symbolic link, not a regular file; kindling never follows links in a pool`),
      e.message,
    );
    return true;
  };
}

describe("a link in place of a volume's or snapshot's file (D10)", () => {
  let backend: Backend;
  let dir: string;
  let outsideDir: string;
  before(async () => {
    ({ backend, dir } = await fileBackend("sqlite"));
    outsideDir = tempDir();
  });
  after(async () => {
    try {
      if (backend) for (const c of await backend.connections()) await c.disconnect().catch(() => undefined);
      await backend?.close();
    } finally {
      if (dir) removeDir(dir);
      if (outsideDir) removeDir(outsideDir);
    }
  });

  /** A volume whose file someone replaced with a link to an outside file. */
  async function linkedVolume(name: string): Promise<{ volume: Volume; outside: { path: string; content: Buffer }; link: string }> {
    const volume = await backend.createVolume({ sizeGiB: 1, name });
    const link = volume.location as string;
    const outside = outsideFile(mkdirTemp(outsideDir, name));
    unlinkSync(link);
    symlinkSync(outside.path, link);
    return { volume, outside, link };
  }

  test("extend, snapshot, clone, open, connect and inspect refuse the link; the outside file never changes", async () => {
    const { volume, outside, link } = await linkedVolume("sym");
    const refused = refusesLink("volume", volume.id, link);

    await assert.rejects(volume.extend(3), refused);
    assertUntouched(outside);
    const after = await backend.getVolume("sym");
    assert.equal(after.sizeGiB, 1, "a refused extend leaves the size");
    assert.equal(after.status, "available", "and the status");

    await assert.rejects(volume.createSnapshot({ name: "sym-snap" }), refused);
    assertUntouched(outside);
    assert.deepEqual(await backend.snapshots(), [], "no snapshot record");

    await assert.rejects(volume.clone({ name: "sym-clone" }), refused);
    assertUntouched(outside);
    await assert.rejects(backend.getVolume("sym-clone"), NotFoundError);

    await assert.rejects(volume.open(), refused);
    await assert.rejects(volume.open({ readOnly: true }), refused);
    await assert.rejects(volume.connect("local"), refused);
    assert.deepEqual(await volume.connections(), [], "no connection record");
    await assert.rejects(volume.inspect(), refused);
    assertUntouched(outside);

    // The pool holds only the link and nothing made by the refused calls.
    const pool = join(dir, "volumes");
    assert.deepEqual(readdirSync(pool).filter((f) => f !== ".kindling"), [`volume-${volume.id}`]);

    // Delete removes the link, never what it points to.
    await volume.delete();
    assert.ok(!existsSync(link));
    assertUntouched(outside);
  });

  test("attach refuses the link: no loop device over the outside file", async (t) => {
    if (needsRoot(t)) return;
    const { volume, outside, link } = await linkedVolume("sym-attach");
    await assert.rejects(volume.attach(), refusesLink("volume", volume.id, link));
    assertUntouched(outside);
    assert.deepEqual(await volume.connections(), [], "the failed attach left no connection");
    await volume.delete();
    assertUntouched(outside);
  });

  test("a link in place of a snapshot's file: a volume from it, open and inspect refuse it", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, name: "snap-source" });
    await writeAt(volume, Buffer.from("snapshot data"));
    const snapshot: Snapshot = await volume.createSnapshot({ name: "linked-snap" });
    const link = snapshot.location as string;
    const outside = outsideFile(mkdirTemp(outsideDir, "snap"));
    unlinkSync(link);
    symlinkSync(outside.path, link);
    const refused = refusesLink("snapshot", snapshot.id, link);
    await assert.rejects(snapshot.createVolume({ name: "from-linked" }), refused);
    await assert.rejects(backend.getVolume("from-linked"), NotFoundError);
    await assert.rejects(snapshot.open(), refused);
    await assert.rejects(snapshot.inspect(), refused);
    assertUntouched(outside);
    await snapshot.delete();
    assert.ok(!existsSync(link));
    assertUntouched(outside);
    await volume.delete();
  });

  test("a directory or a fifo in place of a volume's file is refused (the fifo without hanging)", async () => {
    for (const [kind, make] of [
      ["a directory", (path: string) => mkdirSync(path)],
      ["a fifo", (path: string) => sh("mkfifo", [path])],
    ] as const) {
      const volume = await backend.createVolume({ sizeGiB: 1 });
      const path = volume.location as string;
      unlinkSync(path);
      make(path);
      const refused = (e: unknown) => {
        assert.ok(e instanceof BackendError, String(e));
        assert.ok(e.message.startsWith(`volume ${volume.id} (pool test): ${path} is ${kind}, not a regular file`), e.message);
        return true;
      };
      await assert.rejects(volume.open(), refused);
      await assert.rejects(volume.open({ readOnly: true }), refused);
      await assert.rejects(volume.extend(2), refused);
      await assert.rejects(volume.createSnapshot(), refused);
      await assert.rejects(volume.clone(), refused);
      await assert.rejects(volume.connect("local"), refused);
      await assert.rejects(volume.inspect(), refused);
      assert.equal((await backend.getVolume(volume.id)).sizeGiB, 1);
      // What is not kindling's is not removed by it.
      if (kind === "a directory") await assert.rejects(volume.delete(), refused);
      assert.ok(existsSync(path));
      removeDir(path);
      await volume.delete();
    }
  });

  test("pool stats do not count what a link points to", async () => {
    const before = (await backend.stats(true)).pools[0];
    const { volume, outside } = await linkedVolume("sym-stats");
    truncateSync(outside.path, 5 * GiB);
    const stats = (await backend.stats(true)).pools[0];
    assert.equal(stats.total_volumes, before.total_volumes, "the link is not counted as a volume");
    assert.equal(stats.provisioned_capacity_gb, before.provisioned_capacity_gb, "nor its target's size");
    await volume.delete();
  });
});

describe("attachLoop and loopBacks", () => {
  let dir: string;
  before(() => (dir = tempDir()));
  after(() => removeDir(dir));

  test("a link is refused; a file is attached, and losetup names the file, not a descriptor", async (t) => {
    if (needsRoot(t)) return;
    const outside = outsideFile(mkdirTemp(dir, "outside"));
    const link = join(dir, "link");
    symlinkSync(outside.path, link);
    await assert.rejects(attachLoop(link, { readOnly: false }), (e: unknown) => {
      assert.ok(e instanceof BackendError, String(e));
      assert.match(e.message, /link is a symbolic link, not a regular file; kindling never follows links/);
      return true;
    });
    assertUntouched(outside);

    const file = join(dir, "volume-file");
    truncateSync(writeEmpty(file), 8 * MiB);
    const device = await attachLoop(file, { readOnly: false });
    try {
      assert.equal(await loopBackingFile(device), await realpath(file), "the backing file is the volume's file");
      assert.deepEqual(loopsOf(file), [device], "losetup -j finds it by the volume's file");
      assert.equal(await loopBacks(device, file), true);
      assert.equal(await loopBacks(device, outside.path), false, "another file is not the device's");
      // The file replaced by a link while attached: the device is still the volume's (its own,
      // now deleted, file), so a detach can release it; the link's target is not it.
      unlinkSync(file);
      symlinkSync(outside.path, file);
      assert.equal(await loopBacks(device, file), true);
    } finally {
      await detachLoop(device);
    }
    assert.equal(await loopBacks(device, file), false, "a released device backs nothing");
    assertUntouched(outside);
  });
});

describe("an extend killed mid-way is finished by the next run (D6)", () => {
  let fs: LoopFilesystem | undefined;
  let driver: FileDriver;
  let pool: string;
  before(async () => {
    if (!isRoot) return;
    // Room for one 4 GiB thick volume and little else.
    fs = makeFilesystem("ext4", 4400);
    pool = join(fs.mountpoint, "pool");
    driver = new FileDriver("t", { driver: "file", path: pool, reservedPercentage: 0, maxOverSubscriptionRatio: 20, copyMode: "auto" });
    await driver.setup();
  });
  after(() => fs?.remove());

  function volumeOf(preallocation: string, sizeGiB = 1): DriverVolume {
    return { id: newId(), pool: "t", sizeGiB, extraSpecs: { preallocation }, qosSpecs: {} };
  }

  /** Runs extendVolume in a child process and kills it (SIGKILL) once it has written `killAt` bytes. */
  async function killedExtend(volume: DriverVolume, newSizeGiB: number, killAt: number): Promise<void> {
    const script = [
      "const { FileDriver } = require(process.argv[1]);",
      "const driver = new FileDriver('t', { driver: 'file', path: process.argv[2], reservedPercentage: 0, maxOverSubscriptionRatio: 20, copyMode: 'auto' });",
      "driver.extendVolume(JSON.parse(process.argv[3]), Number(process.argv[4])).then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });",
    ].join("\n");
    const child = spawn(process.execPath, ["-e", script, join(__dirname, "..", "provider", "drivers", "file", "driver"), pool, JSON.stringify(volume), String(newSizeGiB)], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    const file = join(pool, `volume-${volume.id}`);
    let done: number | null | undefined;
    void exited.then((code) => (done = code));
    while (done === undefined && allocatedBytes(file) < killAt) await new Promise((r) => setTimeout(r, 5));
    assert.equal(done, undefined, `the extend ended before it could be killed (exit ${done}): ${stderr}`);
    child.kill("SIGKILL");
    await exited;
  }

  test("preallocation=full: the re-run writes zeroes into the holes left, and keeps data written since", async (t) => {
    if (needsRoot(t)) return;
    const volume = volumeOf("full");
    const file = join(pool, `volume-${volume.id}`);
    await driver.createVolume(volume);
    await killedExtend(volume, 4, GiB + 256 * MiB);
    // The failure as it was: the file grown, its preallocation cut short.
    assert.equal(statSync(file).size, 4 * GiB);
    assert.ok(allocatedBytes(file) < 4 * GiB, `allocated after the kill: ${allocatedBytes(file)}`);
    // A client that saw the grown file writes into the new range, where the killed run had
    // already written zeroes and where it had not got to.
    const early = randomBytes(MiB);
    const late = randomBytes(MiB);
    writeDevice(file, early, GiB + 4096);
    writeDevice(file, late, 4 * GiB - 2 * MiB);

    // The library re-runs extend with the size its records hold (still 1 GiB).
    await driver.extendVolume(volume, 4);
    assert.equal(statSync(file).size, 4 * GiB);
    assert.ok(allocatedBytes(file) >= 4 * GiB, `allocated after the re-run: ${allocatedBytes(file)}`);
    const holes = (await fileExtents(file, 0, 4 * GiB)).filter((e) => e.hole);
    assert.deepEqual(holes, [], "no hole is left anywhere in the volume");
    assert.ok(readRange(file, MiB, GiB + 4096).equals(early), "data written before the re-run is intact");
    assert.ok(readRange(file, MiB, 4 * GiB - 2 * MiB).equals(late), "data written before the re-run is intact");

    // Once more: nothing left to do, nothing changed.
    await driver.extendVolume(volume, 4);
    assert.ok(readRange(file, MiB, 4 * GiB - 2 * MiB).equals(late));
    await driver.deleteVolume(volume);
  });

  test("preallocation=falloc: a file grown by a run killed before fallocate gets its blocks on the re-run", async (t) => {
    if (needsRoot(t)) return;
    const volume = volumeOf("falloc");
    const file = join(pool, `volume-${volume.id}`);
    await driver.createVolume(volume);
    // What a run killed between the ftruncate and the fallocate leaves.
    truncateSync(file, 3 * GiB);
    const data = randomBytes(MiB);
    writeDevice(file, data, 2 * GiB);
    assert.ok(allocatedBytes(file) < 2 * GiB);
    await driver.extendVolume(volume, 3);
    assert.equal(statSync(file).size, 3 * GiB);
    assert.ok(allocatedBytes(file) >= 3 * GiB, `allocated after the re-run: ${allocatedBytes(file)}`);
    assert.ok(readRange(file, MiB, 2 * GiB).equals(data), "fallocate keeps data");
    await driver.deleteVolume(volume);
  });

  test("a failed re-run gives back only what it added: the file keeps the size it had", async (t) => {
    if (needsRoot(t)) return;
    const volume = volumeOf("full");
    const file = join(pool, `volume-${volume.id}`);
    await driver.createVolume(volume);
    // Left grown to 2 GiB by an earlier run; now asked for more than the filesystem holds.
    truncateSync(file, 2 * GiB);
    await assert.rejects(driver.extendVolume(volume, 8), (e: unknown) => e instanceof BackendError && e.code === "NO_SPACE");
    assert.equal(statSync(file).size, 2 * GiB, "the earlier run's size stays; only this call's growth is given back");
    await driver.deleteVolume(volume);
  });
});

describe("reads past the file's end (D1)", () => {
  let backend: Backend;
  let dir: string;
  before(async () => ({ backend, dir } = await fileBackend("memory")));
  after(async () => {
    try {
      await backend?.close();
    } finally {
      if (dir) removeDir(dir);
    }
  });

  test("a file shortened behind an open device: reads past the new end are zeroes, full length", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1 });
    const before = randomBytes(4096);
    await writeAt(volume, before, 256 * MiB - 4096);
    await writeAt(volume, randomBytes(MiB), 512 * MiB);
    const device = await volume.open();
    try {
      truncateSync(volume.location as string, 256 * MiB);
      assert.equal(device.size, GiB, "the device keeps the size the records hold");
      // A buffer full of someone else's bytes, as recycled memory would be.
      const buffer = Buffer.alloc(MiB, "OTHER-TENANT-DATA-");
      assert.equal(await device.pread(buffer, 512 * MiB), MiB, "no short read");
      assert.ok(buffer.equals(Buffer.alloc(MiB)), "past the end reads as zeroes");
      const straddling = Buffer.alloc(8192, "OTHER-TENANT-DATA-");
      assert.equal(await device.pread(straddling, 256 * MiB - 4096), 8192);
      assert.ok(straddling.subarray(0, 4096).equals(before), "what the file still holds is read");
      assert.ok(straddling.subarray(4096).equals(Buffer.alloc(4096)), "the rest is zeroes");
      const tail = await device.extents(256 * MiB, GiB - 256 * MiB);
      assert.deepEqual(tail, [{ offset: 256 * MiB, length: GiB - 256 * MiB, hole: true, zero: true }], "extents cover past the end, as a hole");
    } finally {
      await device.close();
    }
    // A copy reads it the same way: the snapshot has the recorded size, zeroes past the end.
    const snapshot = await volume.createSnapshot();
    assert.equal(statSync(snapshot.location as string).size, GiB);
    const copied = await readAt(snapshot, 8192, 256 * MiB - 4096);
    assert.ok(copied.subarray(0, 4096).equals(before));
    assert.ok(copied.subarray(4096).equals(Buffer.alloc(4096)));
    await snapshot.delete();
    await volume.delete();
  });

  test("a file larger than the records (an extend in progress) opens at the recorded size", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1 });
    truncateSync(volume.location as string, 3 * GiB);
    const device = await volume.open({ readOnly: true });
    try {
      assert.equal(device.size, GiB);
      await assert.rejects(device.pread(Buffer.alloc(4096), GiB), InvalidInputError, "reads stop at the recorded size");
    } finally {
      await device.close();
    }
    await volume.delete();
  });
});

describe("errors when files go away or the pool path is wrong", () => {
  let backend: Backend;
  let dir: string;
  before(async () => ({ backend, dir } = await fileBackend("sqlite", { copyMode: "copy" })));
  after(async () => {
    try {
      await backend?.close();
    } finally {
      if (dir) removeDir(dir);
    }
  });

  /** A NotFoundError naming `kind` `id`, with the hint about another process. */
  function notFound(kind: string, id: string) {
    return (e: unknown) => {
      assert.ok(e instanceof NotFoundError, String(e));
      assert.ok(e.message.startsWith(`${kind} "${id}" not found; its file `), e.message);
      assert.match(e.message, /another process deleted the (volume|snapshot) meanwhile/);
      return true;
    };
  }

  /** A volume with data in several 4 MiB chunks, so a copy reports progress on the way. */
  async function volumeWithData(): Promise<Volume> {
    const volume = await backend.createVolume({ sizeGiB: 1 });
    await writeAt(volume, randomBytes(32 * MiB));
    return volume;
  }

  test("the new file deleted mid-clone: NotFoundError naming the clone; no record, no file", async () => {
    const source = await volumeWithData();
    const id = newId();
    const target = join(dir, "volumes", `volume-${id}`);
    let removed = false;
    const onProgress = (p: { done: number; total: number }) => {
      if (!removed && p.done > 0 && p.done < p.total) {
        unlinkSync(target);
        removed = true;
      }
    };
    await assert.rejects(source.clone({ id }, { onProgress }), notFound("volume", id));
    assert.ok(removed, "the file was deleted mid-copy");
    await assert.rejects(backend.getVolume(id), NotFoundError);
    assert.ok(!existsSync(target));
    await source.delete();
  });

  test("the source deleted mid-snapshot: NotFoundError naming the volume; no snapshot left", async () => {
    const source = await volumeWithData();
    let removed = false;
    const onProgress = (p: { done: number; total: number }) => {
      if (!removed && p.done > 0 && p.done < p.total) {
        unlinkSync(source.location as string);
        removed = true;
      }
    };
    await assert.rejects(source.createSnapshot({ name: "of-deleted" }, { onProgress }), notFound("volume", source.id));
    assert.ok(removed);
    assert.deepEqual(await backend.snapshots(source.id), []);
    assert.deepEqual(readdirSync(join(dir, "volumes")).filter((f) => f.startsWith("snapshot-")), []);
    await source.delete();
  });

  test("extend, connect and open of a volume whose file is gone: NotFoundError naming it", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1 });
    unlinkSync(volume.location as string);
    await assert.rejects(volume.extend(2), notFound("volume", volume.id));
    await assert.rejects(volume.connect("local"), notFound("volume", volume.id));
    await assert.rejects(volume.open(), notFound("volume", volume.id));
    await volume.delete();
  });

  test("a backend path that is a file: '<path> is not a directory', naming the field", async () => {
    const file = join(dir, "afile");
    writeFileSync(file, "not a directory");
    for (const settings of [{ path: file }, { path: join(file, "below") }, { pools: { a: join(file, "below") } }]) {
      await assert.rejects(Backend.open({ name: "bad", driver: "file", ...settings }, { persistence: new MemoryPersistence() }), (e: unknown) => {
        assert.ok(e instanceof InvalidInputError, String(e));
        assert.equal(e.field, "path" in settings ? "path" : "pools.a");
        assert.ok(e.message.startsWith(`${e.field}: ${file} is not a directory`), e.message);
        return true;
      });
    }
    assert.equal(readFileSync(file, "utf8"), "not a directory", "the file is left as it was");
  });
});

function mkdirTemp(parent: string, name: string): string {
  const dir = join(parent, name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

function writeEmpty(path: string): string {
  writeFileSync(path, "");
  return path;
}
