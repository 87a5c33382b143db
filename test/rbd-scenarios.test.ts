// cinderlib's functional scenarios (tests/functional/test_basic.py) on the rbd backend, against a
// throwaway single-node Ceph cluster and its restricted client, with SQLite records; then the
// same data seen through `kindling nbd serve` by real NBD clients. What the library claims is
// checked against what the cluster holds, as its admin sees it.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { Backend, InvalidInputError, loadConfig, openBackends, type BackendSet, type Volume } from "../provider/library";
import { SqlitePersistence } from "../provider/persistence/sqlite";
import { GiB, MiB } from "../provider/util/sizes";
import { loopBackingFile } from "../provider/attach/loop";
import { readAt, writeAt } from "./helpers/backends";
import { CephCluster, cephMissing, needsCeph } from "./helpers/ceph";
import { Daemon, freePort } from "./helpers/daemon";
import { PATTERN, deviceSize, lsblkSize, needsRoot, readRange, removeDir, tempDir, writeDevice } from "./helpers/env";

interface ImageInfo {
  size: number;
  parent?: { pool: string; image: string; snapshot: string };
}

interface SnapInfo {
  name: string;
  size: number;
  protected: string;
}

/** rbd-fuse processes serving `mountPoint`, found by their command lines. */
function rbdFuseProcesses(mountPoint: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
    } catch {
      continue; // exited while we looked
    }
    if (argv[0]?.endsWith("rbd-fuse") && argv.includes(mountPoint)) pids.push(Number(entry));
  }
  return pids;
}

const mounted = (mountPoint: string) => readFileSync("/proc/mounts", "utf8").split("\n").some((line) => line.split(" ")[1] === mountPoint);

/** One cluster for the whole file: each describe has a pool of its own, so their stats stay apart. */
let cluster: CephCluster | undefined;

before(async () => {
  if (!cephMissing()) cluster = await CephCluster.start(["volumes", "exports"]);
});

after(() => {
  if (!cluster) return;
  cluster.stop();
  // down.sh removes the cluster directory; tempDir made its parent.
  removeDir(dirname(cluster.dir));
});

function ceph(): CephCluster {
  assert.ok(cluster, "the Ceph cluster is up");
  return cluster;
}

const images = (pool: string) => ceph().rbdJson<string[]>(["ls", pool]).sort();
const imageInfo = (spec: string) => ceph().rbdJson<ImageInfo>(["info", spec]);
const snapList = (image: string) => ceph().rbdJson<SnapInfo[]>(["snap", "ls", image]);

/** Cinderlib's teardown: snapshots, then disconnect and delete each volume; errors reported together. */
async function teardown(backend: Backend | undefined, pool: string, errors: unknown[]): Promise<void> {
  const attempt = async (work: () => Promise<unknown>) => {
    try {
      await work();
    } catch (err) {
      errors.push(err);
    }
  };
  if (!backend) return;
  await attempt(async () => {
    for (const snapshot of await backend.snapshots()) {
      await attempt(() => snapshot.disconnect());
      await attempt(() => snapshot.delete());
    }
    for (const volume of await backend.volumes()) {
      for (const c of await volume.connections()) await attempt(() => c.disconnect());
      await attempt(() => volume.delete());
    }
  });
  // Deleting every volume must leave the pool empty: clone snapshots and children included.
  if (cluster) await attempt(async () => assert.deepEqual(images(pool), [], `images left in Ceph pool ${pool}`));
}

describe("cinderlib scenarios on the rbd backend (sqlite persistence)", () => {
  let backend: Backend | undefined;
  let dir: string;

  before(async () => {
    if (!cluster) return;
    dir = tempDir();
    backend = await Backend.open(ceph().backend("test") as { name: string; driver: string }, {
      persistence: new SqlitePersistence(join(dir, "records", "kindling.db")),
    });
  });

  after(async () => {
    const errors: unknown[] = [];
    await teardown(backend, "volumes", errors);
    try {
      await backend?.close();
    } catch (err) {
      errors.push(err);
    }
    if (dir) removeDir(dir);
    if (errors.length) throw new AggregateError(errors, `teardown failed: ${errors.map(String).join("; ")}`);
  });

  function lib(): Backend {
    assert.ok(backend, "the backend is open");
    return backend;
  }

  async function createVolume(sizeGiB = 1, name?: string): Promise<Volume> {
    const volume = await lib().createVolume({ sizeGiB, name });
    assert.equal(volume.status, "available");
    assert.equal(volume.sizeGiB, sizeGiB);
    assert.equal(volume.name, name ?? volume.id, "the name given, or the id by default");
    assert.ok((await lib().volumes()).some((v) => v.id === volume.id), "listed in backend.volumes()");
    assert.equal(volume.location, `volumes/volume-${volume.id}`);
    assert.equal(imageInfo(volume.location as string).size, sizeGiB * GiB, "the image exists with the volume's size");
    return volume;
  }

  test("stats", async (t) => {
    if (needsCeph(t)) return;
    const stats = await lib().stats();
    assert.equal(stats.vendor_name, "Open Source");
    assert.equal(stats.volume_backend_name, "test");
    assert.equal(stats.storage_protocol, "ceph");
    assert.equal(stats.pools.length, 1);
    for (const pool of stats.pools) {
      assert.equal(pool.pool_name, "volumes");
      assert.equal(typeof pool.free_capacity_gb, "number");
      assert.equal(typeof pool.total_capacity_gb, "number");
      assert.ok((pool.total_capacity_gb as number) > 0);
      assert.ok((pool.free_capacity_gb as number) <= (pool.total_capacity_gb as number));
    }
  });

  test("stats with creation: cached until refreshed", async (t) => {
    if (needsCeph(t)) return;
    const initial = await lib().stats(true);
    await createVolume(3);
    assert.deepEqual(await lib().stats(false), initial, "stats(false) is the cached value");
    const refreshed = await lib().stats(true);
    assert.equal(refreshed.total_volumes, (initial.total_volumes as number) + 1);
    assert.equal(refreshed.pools[0].total_volumes, initial.pools[0].total_volumes + 1);
    assert.equal(refreshed.provisioned_capacity_gb, initial.provisioned_capacity_gb + 3);
  });

  test("create volume: attached device has the volume's size", async (t) => {
    if (needsCeph(t) || needsRoot(t)) return;
    const volume = await createVolume(2, "create-rbd");
    const connection = await volume.attach();
    try {
      assert.equal(lsblkSize(connection.devicePath as string), 2 * GiB, "lsblk -b shows the volume's size");
      assert.equal(deviceSize(connection.devicePath as string), 2 * GiB);
    } finally {
      await volume.detach();
    }
  });

  test("create and delete volume; deleting again succeeds", async (t) => {
    if (needsCeph(t)) return;
    const volume = await createVolume();
    const spec = volume.location as string;
    await volume.delete();
    assert.equal(volume.status, "deleted");
    assert.equal(volume.deleted, true);
    assert.ok(!(await lib().volumes()).some((v) => v.id === volume.id));
    assert.ok(!images("volumes").includes(`volume-${volume.id}`), "rbd ls no longer lists the image");
    assert.throws(() => imageInfo(spec), /No such file or directory/, "rbd info finds no image");
    await volume.delete();
    assert.equal(volume.status, "deleted");
  });

  test("create snapshot", async (t) => {
    if (needsCeph(t)) return;
    const volume = await createVolume();
    const snapshot = await volume.createSnapshot({ name: "snap-rbd" });
    assert.equal(snapshot.status, "available");
    assert.equal(snapshot.volumeSizeGiB, volume.sizeGiB);
    assert.equal(snapshot.name, "snap-rbd");
    assert.ok((await volume.snapshots()).some((s) => s.id === snapshot.id));
    assert.equal(snapshot.location, `${volume.location}@snapshot-${snapshot.id}`);
    assert.deepEqual(snapList(volume.location as string).map((s) => [s.name, s.size]), [[`snapshot-${snapshot.id}`, GiB]]);
  });

  test("create and delete snapshot; deleting again succeeds", async (t) => {
    if (needsCeph(t)) return;
    const volume = await createVolume();
    const snapshot = await volume.createSnapshot();
    assert.equal(snapList(volume.location as string).length, 1);
    await snapshot.delete();
    assert.equal(snapshot.deleted, true);
    assert.ok(!(await volume.snapshots()).some((s) => s.id === snapshot.id));
    assert.deepEqual(snapList(volume.location as string), [], "rbd snap ls shows no snapshot");
    await snapshot.delete();
    assert.equal(snapshot.status, "deleted");
    assert.deepEqual(snapList(volume.location as string), []);
  });

  test("attach volume: a loop device over the image's rbd-fuse file", async (t) => {
    if (needsCeph(t) || needsRoot(t)) return;
    const volume = await createVolume();
    const connection = await volume.attach();
    try {
      assert.ok((await volume.connections()).some((c) => c.id === connection.id));
      assert.equal((await volume.localAttachment())?.id, connection.id, "it is the volume's local attachment");
      assert.equal(connection.protocol, "rbd");
      const device = connection.devicePath as string;
      assert.match(device, /^\/dev\/loop\d+$/);
      assert.ok(statSync(device).isBlockDevice());
      const file = await loopBackingFile(device);
      assert.ok(file?.endsWith(`/mnt/volume-${volume.id}`), `the loop device is backed by the image's rbd-fuse file (${file})`);
      const mountPoint = dirname(file as string);
      assert.ok(mounted(mountPoint), "rbd-fuse is mounted there");
      assert.equal(rbdFuseProcesses(mountPoint).length, 1, "one rbd-fuse process serves it");
      assert.equal(volume.status, "in-use");
      assert.equal((await lib().getVolume(volume.id)).status, "in-use", "the record says in-use");
    } finally {
      await volume.detach();
    }
  });

  test("attach and detach volume: no rbd-fuse process or mount is left", async (t) => {
    if (needsCeph(t) || needsRoot(t)) return;
    const volume = await createVolume();
    const connection = await volume.attach();
    const file = (await loopBackingFile(connection.devicePath as string)) as string;
    const mountPoint = dirname(file);
    assert.equal(rbdFuseProcesses(mountPoint).length, 1);
    await volume.detach();
    assert.equal(await volume.localAttachment(), undefined);
    assert.deepEqual(await volume.connections(), []);
    assert.equal((await lib().getVolume(volume.id)).status, "available");
    assert.notEqual(await loopBackingFile(connection.devicePath as string), file, "the loop device is released");
    assert.ok(!mounted(mountPoint), "rbd-fuse is unmounted");
    assert.deepEqual(rbdFuseProcesses(mountPoint), [], "rbd-fuse has exited");
    assert.ok(!existsSync(dirname(mountPoint)), "its directory, key file included, is gone");
  });

  test("attach and detach via the connection", async (t) => {
    if (needsCeph(t) || needsRoot(t)) return;
    const volume = await createVolume();
    const connection = await volume.attach();
    const mountPoint = dirname((await loopBackingFile(connection.devicePath as string)) as string);
    await connection.detach();
    assert.equal(connection.attached, false);
    assert.equal(await volume.localAttachment(), undefined);
    assert.ok((await volume.connections()).some((c) => c.id === connection.id), "still connected after detach");
    assert.ok(!mounted(mountPoint), "the device is gone although the connection stays");
    await connection.disconnect();
    assert.deepEqual(await volume.connections(), []);
    assert.equal((await lib().getVolume(volume.id)).status, "available");
  });

  test("disk I/O through the attached device", async (t) => {
    if (needsCeph(t) || needsRoot(t)) return;
    const volume = await createVolume();
    const connection = await volume.attach();
    try {
      writeDevice(connection.devicePath as string, PATTERN);
      assert.deepEqual(readRange(connection.devicePath as string, PATTERN.length), PATTERN);
    } finally {
      await volume.detach();
    }
    // Read by another librbd client (open()'s qemu-nbd): the data reached the cluster.
    assert.deepEqual(await readAt(volume, PATTERN.length), PATTERN, "the data is in the image");
  });

  test("extend, through a volume loaded from persistence", async (t) => {
    if (needsCeph(t)) return;
    const volume = await createVolume();
    const fresh = await lib().getVolume(volume.id);
    const bytes = await fresh.extend(volume.sizeGiB + 1);
    assert.equal(bytes, 2 * GiB);
    assert.equal(fresh.sizeGiB, 2);
    assert.equal((await lib().getVolume(volume.id)).sizeGiB, 2);
    assert.equal(imageInfo(volume.location as string).size, 2 * GiB, "rbd info shows the new size");
    const inspected = await fresh.inspect();
    assert.equal(inspected.sizeGiB, 2);
    assert.equal(inspected.sizeBytes, 2 * GiB);
  });

  test("extend while attached: the device shows the new size", async (t) => {
    if (needsCeph(t) || needsRoot(t)) return;
    const volume = await createVolume();
    const connection = await volume.attach();
    try {
      assert.equal(deviceSize(connection.devicePath as string), GiB);
      const bytes = await volume.extend(3);
      assert.equal(bytes, 3 * GiB);
      assert.equal(volume.sizeGiB, 3);
      assert.equal(volume.status, "in-use");
      assert.equal(imageInfo(volume.location as string).size, 3 * GiB);
      assert.equal(deviceSize(connection.devicePath as string), 3 * GiB);
      assert.equal(lsblkSize(connection.devicePath as string), 3 * GiB);
      assert.equal((await lib().getVolume(volume.id)).sizeGiB, 3, "the record has the new size");
    } finally {
      await volume.detach();
    }
  });

  test("clone keeps the data, as a copy-on-write clone", async (t) => {
    if (needsCeph(t)) return;
    const volume = await createVolume();
    await writeAt(volume, PATTERN, 12345);
    const clone = await volume.clone({ name: "clone-rbd" });
    assert.equal(clone.sizeGiB, volume.sizeGiB);
    assert.equal(clone.sourceVolumeId, volume.id);
    assert.equal(clone.status, "available");
    const info = imageInfo(clone.location as string);
    assert.equal(info.size, imageInfo(volume.location as string).size);
    assert.deepEqual(
      info.parent && [info.parent.pool, info.parent.image, info.parent.snapshot],
      ["volumes", `volume-${volume.id}`, `clone-${clone.id}`],
      "rbd info names the source's snapshot as the parent",
    );
    assert.deepEqual(await readAt(clone, PATTERN.length, 12345), PATTERN);
    const larger = await volume.clone({ sizeGiB: 2 });
    assert.equal((await larger.inspect()).sizeGiB, 2);
    assert.equal(imageInfo(larger.location as string).size, 2 * GiB);
    assert.deepEqual(await readAt(larger, PATTERN.length, 12345), PATTERN);
    // The clones are copies: writing to one leaves the source as it was.
    await writeAt(clone, Buffer.alloc(PATTERN.length, 0x55), 12345);
    assert.deepEqual(await readAt(volume, PATTERN.length, 12345), PATTERN);
  });

  test("volume from snapshot holds the data as it was at snapshot time", async (t) => {
    if (needsCeph(t)) return;
    const volume = await createVolume(2);
    await writeAt(volume, PATTERN);
    const snapshot = await volume.createSnapshot();
    const reversed = Buffer.from(PATTERN).reverse();
    await writeAt(volume, reversed);
    const restored = await snapshot.createVolume();
    assert.equal(restored.sizeGiB, volume.sizeGiB);
    assert.equal(restored.snapshotId, snapshot.id);
    const parent = imageInfo(restored.location as string).parent;
    assert.deepEqual(parent && `${parent.pool}/${parent.image}@${parent.snapshot}`, snapshot.location, "a clone of the RBD snapshot");
    assert.deepEqual(await readAt(restored, PATTERN.length), PATTERN);
    assert.deepEqual(await readAt(volume, PATTERN.length), reversed);
    const bigger = await snapshot.createVolume({ sizeGiB: 3 });
    assert.equal(bigger.sizeGiB, 3);
    assert.equal(imageInfo(bigger.location as string).size, 3 * GiB);
    assert.deepEqual(await readAt(bigger, PATTERN.length), PATTERN);
    // Smaller than the snapshot would cut data off: refused, and nothing is made in the cluster.
    const before = images("volumes");
    const snapsBefore = snapList(volume.location as string);
    const count = (await lib().volumes()).length;
    await assert.rejects(snapshot.createVolume({ sizeGiB: 1 }), (e: unknown) => e instanceof InvalidInputError && e.field === "sizeGiB");
    assert.deepEqual(images("volumes"), before, "rbd ls is unchanged");
    assert.deepEqual(snapList(volume.location as string), snapsBefore);
    assert.equal((await lib().volumes()).length, count);
  });
});

function run(command: string, args: string[]) {
  // nbdsh is Python: Debian's python3 has the nbd module, a pyenv one may not.
  const r = spawnSync(command, args, { encoding: "utf8", env: { ...process.env, PATH: `/usr/bin:${process.env.PATH}` }, maxBuffer: 64 * MiB });
  return { code: r.status ?? -1, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

function ok(command: string, args: string[]): string {
  const r = run(command, args);
  assert.equal(r.code, 0, `${command} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

describe("rbd volumes and snapshots through kindling nbd serve", () => {
  let dir: string;
  let config: string;
  let set: BackendSet | undefined;
  let daemon: Daemon | undefined;
  let volume: Volume;
  let port: number;
  const savedAddress = process.env.KINDLING_NBD_ADDRESS;

  before(async () => {
    if (!cluster) return;
    dir = tempDir();
    config = join(dir, "kindling.json");
    // The daemon and this process read the same file, so they share the SQLite records.
    const entry = { ...ceph().backend("ceph", { pool: "exports" }), persistence: { storage: "sqlite", path: join(dir, "records.db") } };
    delete (entry as { name?: string }).name;
    writeFileSync(config, JSON.stringify({ backends: { ceph: entry } }));
    set = await openBackends(loadConfig({ path: config }));
    port = await freePort();
    // Connection info names the daemon's address, so the URIs below come from the records.
    process.env.KINDLING_NBD_ADDRESS = `127.0.0.1:${port}`;
    volume = await set.get("ceph").createVolume({ name: "nbd-disk", sizeGiB: 1 });
    await volume.connect("nbd");
    daemon = await Daemon.start(config, port);
  });

  after(async () => {
    if (savedAddress === undefined) delete process.env.KINDLING_NBD_ADDRESS;
    else process.env.KINDLING_NBD_ADDRESS = savedAddress;
    const errors: unknown[] = [];
    // The daemon goes first: nothing may hold the images open while they are deleted.
    try {
      if (daemon) assert.equal(await daemon.stop(), 0, `nbd serve exits cleanly: ${daemon.log()}`);
    } catch (err) {
      errors.push(err);
    }
    await teardown(set?.get("ceph"), "exports", errors);
    try {
      await set?.close();
    } catch (err) {
      errors.push(err);
    }
    if (dir) removeDir(dir);
    if (errors.length) throw new AggregateError(errors, `teardown failed: ${errors.map(String).join("; ")}`);
  });

  function uriOf(connection: { connectionInfo: { data: Record<string, unknown> } }): string {
    const uri = connection.connectionInfo.data.uri as string;
    assert.ok(daemon);
    assert.ok(uri.startsWith(`${daemon.uri}/`), `${uri} points at the daemon`);
    return uri;
  }

  async function exported(uri: string): Promise<void> {
    // The daemon looks at the records once a second.
    for (let i = 0; i < 100; i++) {
      if (run("nbdinfo", ["--size", uri]).code === 0) return;
      await sleep(100);
    }
    assert.fail(`${uri} was not exported: ${daemon?.log()}`);
  }

  async function volumeUri(): Promise<string> {
    const [connection] = (await volume.connections()).filter((c) => c.protocol === "nbd" && !c.snapshotId);
    assert.ok(connection, "the volume has its nbd connection");
    return uriOf(connection);
  }

  test("nbdinfo: the export has the volume's size and is writable", async (t) => {
    if (needsCeph(t)) return;
    const uri = await volumeUri();
    assert.equal(uri, `${daemon?.uri}/${volume.id}`);
    const info = JSON.parse(ok("nbdinfo", ["--json", uri]));
    assert.equal(info.exports[0]["export-size"], GiB);
    assert.equal(info.exports[0].is_read_only, false);
    assert.equal(ok("nbdinfo", ["--size", `${daemon?.uri}/nbd-disk`]).trim(), String(GiB), "the volume's name is an alias");
    assert.equal(volume.status, "in-use");
  });

  test("nbdcopy into the export; open() reads the same bytes", async (t) => {
    if (needsCeph(t)) return;
    const data = randomBytes(8 * MiB);
    const source = join(dir, "random.img");
    writeFileSync(source, data);
    ok("nbdcopy", ["--flush", source, await volumeUri()]);
    assert.ok((await readAt(volume, data.length)).equals(data), "the image holds what nbdcopy wrote");
  });

  test("data written through open(); nbdcopy of the export holds it", async (t) => {
    if (needsCeph(t)) return;
    const data = randomBytes(8 * MiB);
    const offset = 64 * MiB + 4096;
    await writeAt(volume, data, offset);
    const out = join(dir, "out.img");
    ok("nbdcopy", [await volumeUri(), out]);
    assert.equal(statSync(out).size, GiB);
    assert.ok(readRange(out, data.length, offset).equals(data), "the export serves what open() wrote");
    assert.ok(readRange(out, 4096, offset + data.length).equals(Buffer.alloc(4096)), "and zeroes after it");
  });

  test("a snapshot export is read-only and holds the data as it was at snapshot time", async (t) => {
    if (needsCeph(t)) return;
    const offset = 512 * MiB;
    await writeAt(volume, PATTERN, offset);
    const snapshot = await volume.createSnapshot({ name: "nbd-snap" });
    const reversed = Buffer.from(PATTERN).reverse();
    await writeAt(volume, reversed, offset);
    const uri = uriOf(await snapshot.connect("nbd"));
    await exported(uri);

    const info = JSON.parse(ok("nbdinfo", ["--json", uri]));
    assert.equal(info.exports[0].is_read_only, true);
    assert.equal(info.exports[0]["export-size"], GiB);
    // libnbd refuses writes to a read-only export by itself; without strict mode the request
    // reaches the server, which must refuse it too.
    const write = run("nbdsh", ["-u", uri, "-c", 'h.set_strict_mode(0)\ntry:\n    h.pwrite(b"x" * 512, 0)\n    print("written")\nexcept nbd.Error as e:\n    print(e.errno)']);
    assert.equal(write.code, 0, write.stderr);
    assert.equal(write.stdout.trim(), "EPERM", "the server refuses the write");
    const qemu = run("qemu-io", ["-f", "raw", "-c", "write -P 0x11 0 4k", uri]);
    assert.notEqual(qemu.code, 0, "qemu-io cannot write the snapshot");
    assert.match(qemu.stderr, /Permission denied|read-only/i, "refused for being read-only, not for another reason");

    const out = join(dir, "snapshot.img");
    ok("nbdcopy", [uri, out]);
    assert.deepEqual(readRange(out, PATTERN.length, offset), PATTERN, "the snapshot holds the data from before the overwrite");
    assert.deepEqual(await readAt(snapshot, PATTERN.length, offset), PATTERN, "as open() on the snapshot sees it");
    const live = JSON.parse(ok("nbdsh", ["-u", await volumeUri(), "-c", `import json; print(json.dumps(list(h.pread(${PATTERN.length}, ${offset}))))`]));
    assert.deepEqual(Buffer.from(live), reversed, "the volume's export has the new data");
    assert.ok(!readRange(out, 512).equals(Buffer.alloc(512, "x")), "the refused write left no trace in the snapshot");
  });
});
