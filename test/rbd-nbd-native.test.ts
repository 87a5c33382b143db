// `kindling nbd serve` exporting RBD volumes from the native data path (provider/nbd/native/rbd.c:
// librbd in the connection's threads, no qemu-nbd), on a throwaway single-node Ceph cluster:
// real clients' bytes against what `rbd export` reads, 64 MiB requests with no block sizes
// negotiated, a client gone with requests in flight, a read-only snapshot, and the daemon where
// librbd cannot be loaded, which serves through the private qemu-nbd as before.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { loadConfig, openBackends, type BackendSet, type Snapshot, type Volume } from "../provider/library";
import { Cmd } from "../provider/util/nbd/protocol";
import { MiB } from "../provider/util/sizes";
import { CephCluster, cephMissing } from "./helpers/ceph";
import { Daemon, freePort } from "./helpers/daemon";
import { removeDir, tempDir } from "./helpers/env";
import { RawClient } from "./helpers/nbd-client";
import { until } from "./helpers/wait";

const skip = cephMissing();
const WAIT = { tries: 400, everyMs: 25 };

function ok(command: string, args: string[]): string {
  const r = spawnSync(command, args, { encoding: "utf8", env: { ...process.env, PATH: `/usr/bin:${process.env.PATH}` }, maxBuffer: 256 * MiB });
  assert.equal(r.status, 0, `${command} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** A process's threads of the native data path (transmission.c names them). */
function nativeThreads(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/task`).filter((task) => {
      try {
        return readFileSync(`/proc/${pid}/task/${task}/comm`, "utf8").trim() === "kindling-nbd";
      } catch {
        return false; // ended while we looked
      }
    }).length;
  } catch {
    return 0;
  }
}

/** qemu-nbd processes whose parent is `pid` (the rbd device's private server). */
function qemuNbdChildren(pid: number): number {
  let n = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (stat.includes("(qemu-nbd)") && Number(fields[1]) === pid) n++;
    } catch {
      // exited while we looked
    }
  }
  return n;
}

describe("rbd volumes served by the native data path", { skip }, () => {
  let cluster: CephCluster;
  let dir: string;
  let config: string;
  let set: BackendSet;
  let volume: Volume;
  let snapshot: Snapshot;
  let daemon: Daemon | undefined;
  let snapshotName: string;
  const data = randomBytes(24 * MiB);
  const big = randomBytes(64 * MiB);
  const BIG_AT = 256 * MiB;

  /** `bytes` into the export with nbdcopy and out again; both copies and `rbd export` hold them. */
  function copyThrough(uri: string, bytes: Buffer, sourceName: string, backName: string): void {
    const source = join(dir, sourceName);
    writeFileSync(source, bytes);
    ok("nbdcopy", ["--flush", source, uri]);
    const back = join(dir, backName);
    ok("nbdcopy", [uri, back]);
    assert.ok(readFileSync(back).subarray(0, bytes.length).equals(bytes), "nbdcopy read back what it wrote");
    assert.ok(exported(volume.location as string, 0, bytes.length).equals(bytes), "rbd export reads what nbdcopy wrote");
  }

  /** What `rbd export` (the cluster's admin, another librbd client) reads from `spec`, from `offset`. */
  function exported(spec: string, offset: number, length: number): Buffer {
    const file = join(dir, `export-${Date.now()}`);
    cluster.admin("rbd", ["export", spec, file, "--no-progress"]);
    return readFileSync(file).subarray(offset, offset + length);
  }

  const exportNameOf = (uri: string) => decodeURIComponent(new URL(uri).pathname.slice(1));

  before(async () => {
    cluster = await CephCluster.start(["volumes"]);
    dir = tempDir();
    config = join(dir, "kindling.json");
    const entry = { ...cluster.backend("ceph"), persistence: { storage: "sqlite", path: join(dir, "records.db") } };
    delete (entry as { name?: string }).name;
    writeFileSync(config, JSON.stringify({ backends: { ceph: entry } }));
    set = await openBackends(loadConfig({ path: config }));
    volume = await set.get("ceph").createVolume({ name: "disk", sizeGiB: 1 });
    await volume.connect("nbd");
    daemon = await Daemon.start(config, await freePort(), { KINDLING_LOG_LEVEL: "debug" });
  });

  after(async () => {
    await daemon?.stop("SIGKILL");
    for (const s of snapshot ? [snapshot] : []) await s.disconnect().catch(() => undefined);
    await snapshot?.delete().catch(() => undefined);
    await volume?.disconnect().catch(() => undefined);
    await volume?.delete().catch(() => undefined);
    await set?.close().catch(() => undefined);
    cluster?.stop();
    if (dir) removeDir(dir);
  });

  test("nbdcopy writes and reads through native threads, with no qemu-nbd; the image holds what rbd export reads", async () => {
    const d = daemon as Daemon;
    const uri = `${d.uri}/disk`;
    copyThrough(uri, data, "source", "back");
    await until(() => d.log().includes('"path":"native","device":"rbd"'), "the daemon's log of the connections", WAIT);
    assert.ok(!d.log().includes('"path":"javascript"'), d.log()); // nbdcopy's connections, all native
    assert.ok(!d.log().includes("librbd cannot be loaded"), d.log());
  });

  test("64 MiB writes and reads with no block sizes negotiated, simple and structured replies", async () => {
    const d = daemon as Daemon;
    const client = await RawClient.connect(d.port);
    try {
      await client.go("disk", { structured: false });
      // The image opens after GO, on libuv's thread pool; the threads start once it is open.
      await until(() => nativeThreads(d.child.pid as number) === 16, "the connection's 16 threads", WAIT);
      assert.equal(qemuNbdChildren(d.child.pid as number), 0, "the device started no private qemu-nbd");
      client.request(Cmd.WRITE, { cookie: 1n, offset: BigInt(BIG_AT), payload: big });
      assert.equal((await client.simpleReply()).error, 0);
      client.request(Cmd.FLUSH, { cookie: 2n });
      assert.equal((await client.simpleReply()).error, 0);
      client.request(Cmd.READ, { cookie: 3n, offset: BigInt(BIG_AT), length: big.length });
      const read = await client.simpleReply(big.length);
      assert.equal(read.error, 0);
      assert.ok(read.data.equals(big), "read back the 64 MiB written");
    } finally {
      client.close();
    }
    assert.ok(exported(volume.location as string, BIG_AT, big.length).equals(big), "rbd export reads the 64 MiB write");
    const structured = await RawClient.connect(d.port);
    try {
      await structured.go("disk");
      structured.request(Cmd.READ, { cookie: 4n, offset: BigInt(BIG_AT), length: big.length });
      const reply = await structured.structuredReply();
      assert.equal(reply.chunks.length, 1);
      assert.ok(reply.chunks[0].data.subarray(8).equals(big), "one data chunk with the 64 MiB");
      // Allocation: the 24 MiB at the start and the 64 MiB at 256 MiB are data, the rest holes.
      structured.request(Cmd.BLOCK_STATUS, { cookie: 5n, offset: 0n, length: 512 * MiB });
      const status = (await structured.structuredReply()).chunks[0].data;
      const runs: Array<[number, number]> = [];
      for (let at = 4; at < status.length; at += 8) runs.push([status.readUInt32BE(at), status.readUInt32BE(at + 4)]);
      assert.deepEqual(runs, [[24 * MiB, 0], [232 * MiB, 3], [64 * MiB, 0], [192 * MiB, 3]]);
    } finally {
      structured.close();
    }
  });

  test("a client gone with writes and reads in flight: its threads end, the image is let go, the next client is served", async () => {
    const d = daemon as Daemon;
    const pid = d.child.pid as number;
    const client = await RawClient.connect(d.port);
    await client.go("disk", { structured: false });
    const chunk = randomBytes(4 * MiB);
    for (let i = 0; i < 16; i++) {
      client.request(i % 2 ? Cmd.READ : Cmd.WRITE, { cookie: BigInt(i), offset: BigInt(512 * MiB + i * chunk.length), ...(i % 2 ? { length: chunk.length } : { payload: chunk }) });
    }
    client.socket.destroy();
    await until(() => nativeThreads(pid) === 0, "the connection's threads to end", WAIT);
    const watchers = () => (cluster.rbdJson<{ watchers: unknown[] }>(["status", volume.location as string]).watchers ?? []).length;
    await until(() => watchers() === 0, "the image to have no watcher (closed by the last thread)", { tries: 100, everyMs: 100 });
    const size = ok("nbdinfo", ["--size", `${d.uri}/disk`]).trim();
    assert.equal(size, String(1024 * MiB));
  });

  test("a snapshot's export is read-only: reads match rbd export of the snapshot, writes get EPERM", async () => {
    const d = daemon as Daemon;
    snapshot = await volume.createSnapshot({ name: "snap" });
    const info = await snapshot.connect("nbd");
    snapshotName = exportNameOf(info.connectionInfo.data.uri as string);
    // The daemon looks at the records once a second.
    await until(() => spawnSync("nbdinfo", ["--size", `${d.uri}/${snapshotName}`]).status === 0, "the snapshot's export", { tries: 100, everyMs: 100 });
    const client = await RawClient.connect(d.port);
    try {
      await client.go(snapshotName, { structured: false });
      await until(() => nativeThreads(d.child.pid as number) === 16, "the connection's 16 threads", WAIT);
      client.request(Cmd.READ, { cookie: 1n, offset: 0n, length: data.length });
      const read = await client.simpleReply(data.length);
      assert.equal(read.error, 0);
      assert.ok(read.data.equals(exported(`${volume.location as string}@snapshot-${snapshot.id}`, 0, data.length)), "the snapshot reads as rbd export of it");
      assert.ok(read.data.equals(data));
      client.request(Cmd.WRITE, { cookie: 2n, offset: 0n, payload: Buffer.alloc(4096, 1) });
      assert.equal((await client.simpleReply()).error, 1, "EPERM");
      client.request(Cmd.WRITE_ZEROES, { cookie: 3n, offset: 0n, length: 4096 });
      assert.equal((await client.simpleReply()).error, 1, "EPERM");
    } finally {
      client.close();
    }
  });

  test("where librbd cannot be loaded the daemon says so once and serves through qemu-nbd", async () => {
    await daemon?.stop();
    daemon = await Daemon.start(config, await freePort(), { KINDLING_LOG_LEVEL: "debug", KINDLING_LIBRBD: join(dir, "no-such-librbd.so") });
    const d = daemon;
    const uri = `${d.uri}/disk`;
    const other = randomBytes(8 * MiB);
    copyThrough(uri, other, "source2", "back2");
    // 64 MiB requests on this path too: the client to qemu-nbd splits them at its 32 MiB.
    const client = await RawClient.connect(d.port);
    try {
      await client.go("disk", { structured: false });
      client.request(Cmd.READ, { cookie: 1n, offset: BigInt(BIG_AT), length: big.length });
      const read = await client.simpleReply(big.length);
      assert.equal(read.error, 0);
      assert.ok(read.data.equals(big));
    } finally {
      client.close();
    }
    await until(() => d.log().includes('"path":"javascript"'), "the daemon's log of the connections", WAIT);
    const log = d.log();
    assert.equal(log.split("librbd cannot be loaded").length - 1, 1, log);
    assert.match(log, /no-such-librbd\.so/);
    assert.ok(!log.includes('"path":"native"'), log);
    assert.equal(await d.stop(), 0);
    daemon = undefined;
  });
});
