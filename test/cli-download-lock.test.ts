// `kindling volume download` (a sparse raw image of a volume or snapshot, through the driver's
// open()) and `kindling volume lock` / `unlock` (the writer lock held by hand), as swiftnbd-ctl's
// download, lock and unlock, against real processes: the command, `kindling nbd serve`, nbdsh.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, existsSync, lstatSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { hostname, userInfo } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { Backend, InUseError, type Volume } from "../provider/library";
import type { VolumeDriver } from "../provider/drivers/contract";
import { SqlitePersistence } from "../provider/persistence/sqlite";
import { readWriterLock } from "../provider/library/export-claims";
import { GiB, MiB } from "../provider/util/sizes";
import { KINDLING, kindling, ok } from "./helpers/cli";
import { Daemon, freePort } from "./helpers/daemon";
import { removeDir, tempDir, writeDevice } from "./helpers/env";
import { CephCluster, cephMissing, needsCeph } from "./helpers/ceph";
import { writeAt } from "./helpers/backends";

interface Write {
  offset: number;
  data: Buffer;
}

/** Data at scattered offsets: the first block, unaligned runs, a whole MiB far in, the last bytes. */
function scattered(size: number): Write[] {
  return [
    { offset: 0, data: randomBytes(4096) },
    { offset: 7 * MiB + 123, data: randomBytes(10_000) },
    { offset: 300 * MiB, data: randomBytes(MiB) },
    { offset: 777 * MiB + 4095, data: randomBytes(3) },
    { offset: size - 4096, data: randomBytes(4096) },
  ];
}

/** SHA-256 of an image of `size` bytes holding `writes` (in order, not overlapping) and zeroes elsewhere. */
function imageSha256(size: number, writes: Write[]): string {
  const hash = createHash("sha256");
  const zeroes = Buffer.alloc(8 * MiB);
  let at = 0;
  const zeroTo = (end: number) => {
    for (; at < end; at += Math.min(zeroes.length, end - at)) hash.update(zeroes.subarray(0, Math.min(zeroes.length, end - at)));
  };
  for (const w of [...writes].sort((a, b) => a.offset - b.offset)) {
    zeroTo(w.offset);
    hash.update(w.data);
    at = w.offset + w.data.length;
  }
  zeroTo(size);
  return hash.digest("hex");
}

function readRange(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, "r");
  try {
    const buffer = Buffer.alloc(length);
    assert.equal(readSync(fd, buffer, 0, length, offset), length);
    return buffer;
  } finally {
    closeSync(fd);
  }
}

/** The image holds every write, zeroes around them, and takes little more than their space. */
function assertImage(path: string, size: number, writes: Write[]): void {
  const stats = statSync(path);
  assert.equal(stats.size, size);
  for (const w of writes) assert.ok(readRange(path, w.offset, w.data.length).equals(w.data), `the data at ${w.offset}`);
  for (const offset of [MiB, 200 * MiB, 600 * MiB]) assert.ok(readRange(path, offset, 65536).equals(Buffer.alloc(65536)), `zeroes at ${offset}`);
  const data = writes.reduce((n, w) => n + w.data.length, 0);
  // Sparse: what the data needs (block-rounded), nowhere near the volume's size.
  assert.ok(stats.blocks * 512 >= data, `${stats.blocks} blocks hold the ${data} bytes of data`);
  assert.ok(stats.blocks * 512 < data + 4 * MiB, `sparse: ${stats.blocks * 512} bytes allocated for ${data} bytes of data`);
}

function sha256sum(path: string): string {
  return spawnSync("sha256sum", [path], { encoding: "utf8" }).stdout.split(" ")[0];
}

/** The system's libnbd tools, whose Python bindings live in the system's Python. */
const nbdEnv = () => ({ ...process.env, PATH: `/usr/bin:${process.env.PATH}` });

function sh(command: string, args: string[]) {
  const r = spawnSync(command, args, { encoding: "utf8", env: nbdEnv() });
  return { code: r.status ?? -1, out: (r.stdout ?? "") + (r.stderr ?? "") };
}

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 150; i++) {
    if (check()) return;
    await sleep(100);
  }
  assert.fail(`timed out waiting for ${what}`);
}

const partials = (dir: string) => readdirSync(dir).filter((n) => n.startsWith(".kindling-download-"));
const me = () => `${userInfo().username}@${hostname()}`;

describe("kindling volume download, lock and unlock (file backend)", () => {
  let dir: string;
  let out: string;
  let config: string;
  const daemons: Daemon[] = [];
  const k = (...args: string[]) => kindling(["--config", config, ...args]);
  const json = (...args: string[]) => ok(k("--json", ...args)).json();
  const start = async () => {
    const d = await Daemon.start(config, await freePort());
    daemons.push(d);
    return d;
  };
  const exportsOf = (d: Daemon) => sh("nbdinfo", ["--list", d.uri]).out;
  const write = (volume: string, writes: Write[]) => {
    const location = json("volume", "show", volume).location as string;
    for (const w of writes) writeDevice(location, w.data, w.offset);
  };

  before(() => {
    dir = tempDir();
    out = join(dir, "out");
    mkdirSync(out);
    config = join(dir, "kindling.json");
    writeFileSync(config, JSON.stringify({ backends: { b: { driver: "file", path: join(dir, "volumes") } } }));
  });
  after(async () => {
    for (const d of daemons) await d.stop("SIGKILL");
    removeDir(dir);
  });

  test("download writes a sparse raw image with the volume's bytes, and its sha256", () => {
    json("volume", "create", "scattered", "--size", "1");
    const writes = scattered(GiB);
    write("scattered", writes);
    const file = join(out, "scattered.img");
    const result = json("volume", "download", "scattered", file);
    assertImage(file, GiB, writes);
    const expected = imageSha256(GiB, writes);
    assert.equal(result.sha256, expected, "the reported sha256 is the image's, holes as zeroes");
    assert.equal(sha256sum(file), expected, "sha256sum agrees");
    assert.equal(result.bytes, GiB);
    assert.equal(result.file, file);
    assert.ok(result.dataBytes >= 4096 + 10_000 + MiB && result.dataBytes < 64 * MiB, `only the data was written (${result.dataBytes})`);
    assert.equal(result.volume.name, "scattered");
    assert.equal(result.snapshot, undefined);
    assert.equal(statSync(file).mode & 0o777, 0o600, "readable by its owner only");
    assert.deepEqual(partials(out), [], "no partial file left");
    assert.equal(json("volume", "show", "scattered").writerLock, null, "the download gave its writer lock back");

    const text = ok(k("volume", "download", "scattered", join(out, "text.img"))).stdout;
    assert.match(text, new RegExp(`downloaded volume scattered to .*text\\.img: 1\\.0 GiB`));
    assert.match(text, new RegExp(`sha256 ${expected}`));
  });

  test("download of a snapshot holds the data as it was when the snapshot was taken", () => {
    json("volume", "create", "snapped", "--size", "1");
    const before = scattered(GiB);
    write("snapped", before);
    const snapshot = json("snapshot", "create", "snapped", "before");
    const afterWrites = scattered(GiB);
    write("snapped", afterWrites);

    const file = join(out, "before.img");
    const result = json("volume", "download", "snapped", file, "--snapshot", "before");
    assertImage(file, GiB, before);
    assert.equal(result.sha256, imageSha256(GiB, before));
    assert.equal(sha256sum(file), result.sha256);
    assert.deepEqual(result.snapshot, { id: snapshot.id, name: "before" });
    const now = json("volume", "download", "snapped", join(out, "now.img"));
    assert.equal(now.sha256, imageSha256(GiB, afterWrites), "the volume itself has the later data");

    json("volume", "create", "other", "--size", "1");
    const wrong = k("volume", "download", "other", join(out, "wrong.img"), "--snapshot", "before");
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /--snapshot: snapshot before is not a snapshot of volume other/);
    assert.ok(!existsSync(join(out, "wrong.img")));
  });

  test("an existing FILE is kept unless --force; a symlink is refused even with --force", () => {
    json("volume", "create", "target", "--size", "1");
    const writes = [{ offset: 5 * MiB, data: randomBytes(8192) }];
    write("target", writes);
    const file = join(out, "existing.img");
    writeFileSync(file, "keep me");
    const refused = k("volume", "download", "target", file);
    assert.equal(refused.code, 4);
    assert.match(refused.stderr, /existing\.img already exists; --force replaces it/);
    assert.equal(readFileSync(file, "utf8"), "keep me");

    const forced = json("volume", "download", "target", file, "--force");
    assert.equal(forced.sha256, imageSha256(GiB, writes));
    assert.equal(sha256sum(file), forced.sha256, "replaced by the image");

    const pointed = join(out, "pointed-at");
    writeFileSync(pointed, "not an image");
    const link = join(out, "link.img");
    symlinkSync(pointed, link);
    for (const extra of [[], ["--force"]]) {
      const r = k("volume", "download", "target", link, ...extra);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /link\.img is a symbolic link; downloads never follow links/);
      assert.ok(lstatSync(link).isSymbolicLink(), "the link is left as it was");
      assert.equal(readFileSync(pointed, "utf8"), "not an image", "and so is what it points to");
    }
    const dirTarget = k("volume", "download", "target", out, "--force");
    assert.equal(dirTarget.code, 2);
    assert.match(dirTarget.stderr, /is not a regular file/);
    assert.deepEqual(partials(out), []);
  });

  test("a download holds the writer lock; Ctrl-C stops it and removes the partial file", async () => {
    // Large and sparse: its holes take far longer to hash than the signal takes to arrive.
    json("volume", "create", "huge", "--size", "64");
    const file = join(out, "huge.img");
    const child = spawn(KINDLING, ["--config", config, "volume", "download", "huge", file], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    await until(() => partials(out).length > 0 || child.exitCode !== null, "the partial file");
    // Meanwhile the download holds the writer lock: no writer starts while it reads.
    const holder = json("volume", "show", "huge").writerLock;
    assert.equal(holder.purpose, "download");
    assert.equal(holder.owner.pid, child.pid);
    const lock = k("volume", "lock", "huge");
    assert.equal(lock.code, 4);
    assert.match(lock.stderr, new RegExp(`volume huge is being downloaded by kindling volume download on ${hostname()}:${child.pid}`));
    child.kill("SIGINT");
    assert.equal(await exited, 130, stderr);
    assert.match(stderr, /interrupted; the partial file was removed/);
    assert.ok(!existsSync(file), "no FILE");
    assert.deepEqual(partials(out), [], "no partial file");
    assert.equal(json("volume", "show", "huge").writerLock, null, "its writer lock was given back");
  });

  test("refused while `kindling nbd serve` exports the volume read-write; its snapshot still downloads; unlock needs --force", async () => {
    json("volume", "create", "served", "--size", "1");
    json("connect", "served", "--protocol", "nbd");
    const d = await start();
    await until(() => exportsOf(d).includes('export="served"'), "the export");
    // A writable client, connected through the whole refusal.
    const client = spawn("nbdsh", ["-u", `${d.uri}/served`, "-c", [
      "import sys",
      "assert not h.is_read_only()",
      'h.pwrite(b"\\x5a" * 65536, 1 << 20); h.flush()',
      'print("ready", flush=True)',
      "sys.stdin.read()",
    ].join("\n")], { stdio: ["pipe", "pipe", "pipe"], env: nbdEnv() });
    let clientOut = "";
    client.stdout.on("data", (d) => (clientOut += d));
    client.stderr.on("data", (d) => (clientOut += d));
    try {
      await until(() => clientOut.includes("ready") || client.exitCode !== null, "the client's write");
      assert.match(clientOut, /ready/);

      const shown = json("volume", "show", "served").writerLock;
      assert.equal(shown.kind, "process");
      assert.equal(shown.purpose, "nbd serve");
      assert.equal(shown.owner.pid, d.child.pid);
      assert.equal(shown.live, true);
      assert.match(ok(k("volume", "show", "served")).stdout, new RegExp(`writer lock\\s+kindling nbd serve on ${hostname()}:${d.child.pid}`));

      const file = join(out, "served.img");
      const refused = k("volume", "download", "served", file);
      assert.equal(refused.code, 4);
      assert.match(refused.stderr, new RegExp(`volume served is exported read-write by kindling nbd serve on ${hostname()}:${d.child.pid}`));
      assert.match(refused.stderr, /snapshot it first/);
      assert.ok(!existsSync(file));
      assert.deepEqual(partials(out), []);

      const lock = k("volume", "lock", "served");
      assert.equal(lock.code, 4);
      assert.match(lock.stderr, /volume served is exported read-write by kindling nbd serve/);

      json("snapshot", "create", "served", "while-served");
      const snap = json("volume", "download", "served", join(out, "while-served.img"), "--snapshot", "while-served");
      assert.equal(snap.sha256, imageSha256(GiB, [{ offset: MiB, data: Buffer.alloc(65536, 0x5a) }]), "the snapshot has the client's flushed write");

      const unlock = k("volume", "unlock", "served");
      assert.equal(unlock.code, 4);
      assert.match(unlock.stderr, new RegExp(`writer lock is held by kindling nbd serve on ${hostname()}:${d.child.pid}, which is running`));
      assert.match(unlock.stderr, /--force/);
      assert.equal(json("volume", "show", "served").writerLock.purpose, "nbd serve", "still held");

      const forced = k("--json", "volume", "unlock", "served", "--force");
      assert.equal(forced.code, 0, forced.stderr);
      assert.match(forced.stderr, new RegExp(`warning: released the writer lock of volume served held by kindling nbd serve on ${hostname()}:${d.child.pid}`));
      assert.equal(forced.json().released, true);
      assert.equal(forced.json().holder.owner.pid, d.child.pid);
    } finally {
      client.stdin.end();
      await new Promise((resolve) => (client.exitCode !== null ? resolve(undefined) : client.once("exit", resolve)));
      json("disconnect", "served");
      assert.equal(await d.stop(), 0);
    }
  });

  test("lock and unlock across processes: a second lock, a read-write export, a download and a delete are refused until unlock", async () => {
    json("volume", "create", "held", "--size", "1");
    json("connect", "held", "--protocol", "nbd");
    json("snapshot", "create", "held", "held-snap");
    json("connect", "held-snap", "--protocol", "nbd");

    const locked = json("volume", "lock", "held");
    assert.equal(locked.writerLock.kind, "hand");
    assert.equal(`${locked.writerLock.user}@${locked.writerLock.host}`, me());
    assert.ok(!Number.isNaN(Date.parse(locked.writerLock.since)));
    const shown = json("volume", "show", "held").writerLock;
    assert.deepEqual({ kind: shown.kind, user: shown.user, host: shown.host }, { kind: "hand", user: userInfo().username, host: hostname() });
    assert.match(ok(k("volume", "show", "held")).stdout, new RegExp(`writer lock\\s+${me()} \\(by hand, since `));

    const again = k("volume", "lock", "held");
    assert.equal(again.code, 4);
    assert.match(again.stderr, new RegExp(`volume held is already locked by ${me()} \\(by hand`));

    const d = await start();
    await until(() => exportsOf(d).includes('export="held-snap"'), "the snapshot's export");
    assert.ok(!exportsOf(d).includes('export="held"'), "no read-write export while locked by hand");
    assert.match(d.log(), /volume is locked by .* with `kindling volume lock`; not exporting it read-write/);
    assert.ok(d.log().includes(me()), "the refusal names who holds the lock");
    assert.equal(sh("nbdinfo", ["--size", `${d.uri}/held-snap`]).out.trim(), String(GiB), "the snapshot is still served");

    const download = k("volume", "download", "held", join(out, "held.img"));
    assert.equal(download.code, 4);
    assert.match(download.stderr, /volume held is locked by .*; it cannot be downloaded; `kindling volume unlock held` releases it/);
    json("volume", "create", "alone", "--size", "1");
    json("volume", "lock", "alone");
    const del = k("volume", "delete", "alone");
    assert.equal(del.code, 4, "a locked volume is not deleted (as swiftnbd-ctl's delete)");
    assert.match(del.stderr, /volume alone is locked by .*; it cannot be deleted; `kindling volume unlock alone` releases it/);
    json("volume", "unlock", "alone");
    json("volume", "delete", "alone");

    const unlocked = json("volume", "unlock", "held");
    assert.equal(unlocked.released, true);
    assert.equal(unlocked.holder.kind, "hand");
    await until(() => exportsOf(d).includes('export="held"'), "the read-write export once unlocked");
    const w = sh("nbdsh", ["-u", `${d.uri}/held`, "-c", 'assert not h.is_read_only(); h.pwrite(b"\\x11" * 4096, 0); h.flush()']);
    assert.equal(w.code, 0, w.out);
    const daemonHeld = k("volume", "unlock", "held");
    assert.equal(daemonHeld.code, 4, "the lock is the daemon's now");
    assert.match(daemonHeld.stderr, /held by kindling nbd serve on .*, which is running/);

    json("disconnect", "held");
    json("disconnect", "held-snap");
    assert.equal(await d.stop(), 0);
    assert.equal(json("volume", "show", "held").writerLock, null);
    assert.equal(json("volume", "unlock", "held").released, false, "unlocking an unlocked volume is no error");
  });
});

describe("driver writer-lock hooks (lockVolume / unlockVolume)", () => {
  let dir: string;
  let backend: Backend;
  let volume: Volume;
  const calls: string[] = [];

  before(async () => {
    dir = tempDir();
    backend = await Backend.open({ name: "hooks", driver: "file", path: join(dir, "volumes") }, { persistence: new SqlitePersistence(join(dir, "records.db")) });
    volume = await backend.createVolume({ name: "v", sizeGiB: 1 });
  });
  after(async () => {
    await backend.close();
    removeDir(dir);
  });

  test("the driver's lock is taken after the records' and given back first; a refusal leaves nothing taken", async () => {
    // The file driver keeps no lock of its own; these hooks stand where a store's lease (the
    // object driver's) would be, and look at the records when they are called.
    const driver = backend.driver as VolumeDriver;
    let refuse = false;
    driver.lockVolume = async (v, holder) => {
      const record = await readWriterLock(backend.persistence, v.id);
      calls.push(`lock ${holder} record:${record?.holder?.kind ?? "none"}`);
      if (refuse) throw new InUseError("the store's lease is held elsewhere");
    };
    driver.unlockVolume = async (v, opts) => {
      const record = await readWriterLock(backend.persistence, v.id);
      calls.push(`unlock force:${opts.force} record:${record?.holder?.kind ?? "none"}`);
    };
    try {
      await volume.lock();
      await volume.unlock();
      assert.deepEqual(calls.splice(0), [`lock ${me()} record:hand`, "unlock force:false record:hand"]);

      refuse = true;
      await assert.rejects(volume.lock(), /the store's lease is held elsewhere/);
      assert.equal(await volume.writer(), undefined, "the records' lock was given back");
      assert.deepEqual(calls.splice(0), [`lock ${me()} record:hand`]);

      assert.deepEqual(await volume.unlock(), { locked: false });
      assert.deepEqual(calls.splice(0), [], "nothing to release");
      await volume.unlock({ force: true });
      assert.deepEqual(calls.splice(0), ["unlock force:true record:none"], "--force asks the driver to release whoever holds its lock");
    } finally {
      delete driver.lockVolume;
      delete driver.unlockVolume;
    }
  });
});

describe("kindling volume download (rbd backend)", () => {
  let cluster: CephCluster | undefined;
  let dir: string;
  let config: string;

  before(async () => {
    if (cephMissing()) return;
    cluster = await CephCluster.start(["volumes"]);
    dir = tempDir();
    config = join(dir, "kindling.json");
    const entry: Record<string, unknown> = { ...cluster.backend("ceph"), persistence: { storage: "sqlite", path: join(dir, "records.db") } };
    delete entry.name;
    writeFileSync(config, JSON.stringify({ backends: { ceph: entry } }));
  });
  after(async () => {
    try {
      // The images go before the cluster does (deletes of what is not there succeed).
      if (cluster) for (const args of [["snapshot", "delete", "rbd-snap"], ["volume", "delete", "rbd-data"]]) kindling(["--config", config, ...args]);
    } finally {
      cluster?.stop();
    }
    if (dir) removeDir(dir);
  });

  test("a volume and its snapshot download as sparse images with their sha256", async (t) => {
    if (needsCeph(t)) return;
    const k = (...args: string[]) => ok(kindling(["--config", config, "--json", ...args])).json();
    k("volume", "create", "rbd-data", "--size", "1");
    const set = await Backend.open({ ...(JSON.parse(readFileSync(config, "utf8")).backends.ceph), name: "ceph" }, { baseDir: dir });
    const writes = scattered(GiB);
    try {
      const volume = await set.getVolume("rbd-data");
      for (const w of writes) await writeAt(volume, w.data, w.offset);
    } finally {
      await set.close();
    }
    k("snapshot", "create", "rbd-data", "rbd-snap");
    const file = join(dir, "rbd.img");
    const result = k("volume", "download", "rbd-data", file);
    assertImage(file, GiB, writes);
    assert.equal(result.sha256, imageSha256(GiB, writes));
    assert.equal(sha256sum(file), result.sha256);
    const snapFile = join(dir, "rbd-snap.img");
    const snap = k("volume", "download", "rbd-data", snapFile, "--snapshot", "rbd-snap");
    assert.equal(snap.sha256, result.sha256);
    assertImage(snapFile, GiB, writes);
  });
});
