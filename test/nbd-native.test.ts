// The NBD server's native data path (provider/nbd/native): the connections it takes and the
// ones it leaves to JavaScript, clients that vanish with requests in flight on its threads, a
// server stopped under load, and a daemon whose native module is missing at run time.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, readdirSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { FileBlockDevice } from "../provider/drivers/file/blockdevice";
import { NbdServer } from "../provider/nbd";
import { nativeTransmission } from "../provider/nbd/native/module";
import { Cmd, CmdFlag } from "../provider/util/nbd/protocol";
import { MiB } from "../provider/util/sizes";
import { cliFor } from "./helpers/cli";
import { Daemon, freePort } from "./helpers/daemon";
import { removeDir, tempDir } from "./helpers/env";
import { RawClient } from "./helpers/nbd-client";
import { openFds, until } from "./helpers/wait";


/** This process's threads of the native data path (transmission.c names them). */
const nativeThreads = () =>
  readdirSync("/proc/self/task").filter((task) => {
    try {
      return readFileSync(`/proc/self/task/${task}/comm`, "utf8").trim() === "kindling-nbd";
    } catch {
      return false; // ended while we looked
    }
  }).length;


const WAIT = { tries: 200, everyMs: 25 };

describe("the NBD server's native data path", () => {
  let dir: string;
  let file: string;
  let server: NbdServer;
  let port: number;
  const SIZE = 64 * MiB;

  before(async () => {
    assert.ok(nativeTransmission(), "the native module is built (make setup builds dist/native)");
    dir = tempDir();
    file = join(dir, "disk");
    writeFileSync(file, Buffer.alloc(0));
    truncateSync(file, SIZE);
    server = new NbdServer({ port: 0 });
    server.exports.set({ name: "disk", readOnly: false, open: () => FileBlockDevice.open(file, false) });
    // QoS limits are kept by the JavaScript path's limiter.
    server.exports.set({ name: "limited", readOnly: false, open: () => FileBlockDevice.open(file, false), qos: { total_iops_sec: "100000" } });
    ({ port } = await server.listen());
  });
  after(async () => {
    await server.close();
    removeDir(dir);
  });

  test("a file device is served by native threads (until the connection ends), a QoS-limited export by JavaScript", async () => {
    const before = { ...server.served };
    assert.equal(nativeThreads(), 0);
    const c = await RawClient.connect(port);
    await c.go("disk", { structured: true });
    await until(() => nativeThreads() === 4, "the connection's four threads", WAIT);
    assert.equal(server.served.native, before.native + 1);
    c.request(Cmd.WRITE, { offset: 4096n, payload: Buffer.alloc(4096, 7), cookie: 1n });
    assert.deepEqual((await c.structuredReply()).chunks.map((k) => k.type), [0]);
    c.request(Cmd.DISC);
    await until(() => server.connections === 0, "the connection to end", WAIT);
    await until(() => nativeThreads() === 0, "its threads to end", WAIT);
    assert.equal(openFds(file), 0, "the device is closed once the native side is done");

    const limited = await RawClient.connect(port);
    await limited.go("limited", { structured: true });
    assert.equal(server.served.javascript, before.javascript + 1);
    assert.equal(nativeThreads(), 0, "no native threads for it");
    limited.close();
    await until(() => server.connections === 0, "the limited connection to end", WAIT);
  });

  test("the JavaScript path's reused buffers: 1 MiB reads and writes in flight at once each carry their own bytes", async () => {
    const c = await RawClient.connect(port);
    await c.go("limited", { structured: false });
    const BLOCK = MiB;
    const blocks = 32;
    // Writes first, all in flight: each payload is received into a buffer another one used.
    const written = Array.from({ length: blocks }, () => randomBytes(BLOCK));
    written.forEach((payload, i) => c.request(Cmd.WRITE, { offset: BigInt(i * BLOCK), payload, cookie: BigInt(i) }));
    for (let i = 0; i < blocks; i++) assert.equal((await c.simpleReply()).error, 0);
    const bytes = readFileSync(file);
    written.forEach((payload, i) => assert.ok(bytes.subarray(i * BLOCK, (i + 1) * BLOCK).equals(payload), `write ${i} is in the file`));
    // Then three rounds of reads, all sent before any reply is read: the replies pile up
    // unwritten in the server's socket, while later rounds' reads are served from buffers that
    // earlier ones handed back. One handed back before its reply was written would be read into
    // again, and its reply would carry another block's bytes.
    const rounds = 3;
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < blocks; i++) c.request(Cmd.READ, { offset: BigInt(((i + round) % blocks) * BLOCK), length: BLOCK, cookie: BigInt(round * blocks + i) });
      await sleep(200);
    }
    for (let n = 0; n < rounds * blocks; n++) {
      const r = await c.simpleReply(BLOCK);
      assert.equal(r.error, 0);
      const round = Math.floor(Number(r.cookie) / blocks);
      const block = ((Number(r.cookie) % blocks) + round) % blocks;
      assert.ok(r.data.equals(written[block]), `the reply to read ${r.cookie} holds block ${block}`);
    }
    c.close();
    await until(() => server.connections === 0, "the connection to end", WAIT);
  });

  test("a client gone with 1 MiB writes and reads in flight: the server closes its side, the device is closed, the next client is served", async () => {
    for (let round = 0; round < 5; round++) {
      const c = await RawClient.connect(port);
      await c.go("disk", { structured: true });
      for (let i = 0; i < 24; i++) {
        if (i % 2) c.request(Cmd.READ, { offset: BigInt(i * MiB), length: MiB, cookie: BigInt(i) });
        else c.request(Cmd.WRITE, { offset: BigInt(i * MiB), payload: randomBytes(MiB), cookie: BigInt(i), flags: i % 4 === 0 ? CmdFlag.FUA : 0 });
      }
      // Gone mid-stream: some requests read, some being served, some replies unsendable.
      c.socket.destroy();
    }
    await until(() => server.connections === 0, "every connection to end", WAIT);
    await until(() => openFds(file) === 0, "every device to be closed", WAIT);
    const c = await RawClient.connect(port);
    await c.go("disk", { structured: false });
    const payload = randomBytes(2 * MiB);
    c.request(Cmd.WRITE, { offset: 40n * BigInt(MiB), payload, cookie: 99n });
    assert.equal((await c.simpleReply()).error, 0);
    c.request(Cmd.FLUSH, { cookie: 100n });
    assert.equal((await c.simpleReply()).error, 0);
    c.request(Cmd.READ, { offset: 40n * BigInt(MiB), length: 2 * MiB, cookie: 101n });
    const back = await c.simpleReply(2 * MiB);
    assert.ok(back.data.equals(payload));
    c.close();
    assert.ok(readFileSync(file).subarray(40 * MiB, 42 * MiB).equals(payload), "in the file itself");
  });

  test("a client that stops reading its replies cannot hold the server's close, on either path", async () => {
    for (const path of ["native", "javascript"] as const) {
      if (path === "javascript") process.env.KINDLING_NBD_NATIVE = "off";
      try {
        const held = new NbdServer({ port: 0 });
        held.exports.set({ name: "disk", readOnly: false, open: () => FileBlockDevice.open(file, false) });
        const { port: p } = await held.listen();
        const c = await RawClient.connect(p);
        await c.go("disk", { structured: false });
        // 64 MiB of replies asked for and never read: more than both sides' socket buffers.
        c.socket.pause();
        for (let i = 0; i < 64; i++) c.request(Cmd.READ, { offset: BigInt(i * MiB), length: MiB, cookie: BigInt(i) });
        await until(() => held.served[path] === 1, `the connection on the ${path} path`, WAIT);
        await sleep(300);
        const closed = await Promise.race([held.close().then(() => true), sleep(15_000).then(() => false)]);
        assert.equal(closed, true, `${path}: the server's close finished`);
        assert.equal(held.connections, 0);
        await until(() => openFds(file) === 0, "the device to be closed", WAIT);
        c.socket.destroy();
      } finally {
        delete process.env.KINDLING_NBD_NATIVE;
      }
    }
    assert.equal(nativeThreads(), 0);
  });

  test("the server stopped with writes in flight on native threads: every write it acknowledged is in the file", async () => {
    const stopped = new NbdServer({ port: 0 });
    stopped.exports.set({ name: "disk", readOnly: false, open: () => FileBlockDevice.open(file, false) });
    const { port: p } = await stopped.listen();
    const c = await RawClient.connect(p);
    await c.go("disk", { structured: false });
    const written = new Map<bigint, Buffer>();
    for (let i = 0; i < 32; i++) {
      const payload = randomBytes(256 * 1024);
      written.set(BigInt(i), payload);
      c.request(Cmd.WRITE, { offset: BigInt(i * 256 * 1024), payload, cookie: BigInt(i) });
    }
    const acknowledged: bigint[] = [];
    const replies = (async () => {
      for (;;) {
        const r = await c.simpleReply().catch(() => undefined);
        if (!r) return;
        if (r.error === 0) acknowledged.push(r.cookie);
      }
    })();
    await until(() => acknowledged.length > 0, "the first write's answer", WAIT);
    await stopped.close();
    await replies;
    const bytes = readFileSync(file);
    for (const cookie of acknowledged) {
      const at = Number(cookie) * 256 * 1024;
      assert.ok(bytes.subarray(at, at + 256 * 1024).equals(written.get(cookie) as Buffer), `acknowledged write ${cookie} is in the file`);
    }
  });
});

describe("kindling nbd serve killed with writes in flight on its native threads", () => {
  let dir: string;
  const daemons: Daemon[] = [];

  before(() => {
    dir = tempDir();
  });
  after(async () => {
    for (const d of daemons) await d.stop("SIGKILL");
    removeDir(dir);
  });

  test("kill -9: the client gets an end, not a hang; every acknowledged write is in the volume; a new daemon takes the export over at once", async () => {
    const config = join(dir, "kindling.json");
    writeFileSync(config, JSON.stringify({ backends: { b: { driver: "file", path: join(dir, "volumes") } } }));
    const cli = cliFor(config);
    const volume = cli("volume", "create", "crash", "--size", "1") as { location: string };
    cli("connect", "crash", "--protocol", "nbd");
    const first = await Daemon.start(config, await freePort(), { KINDLING_LOG_LEVEL: "debug" });
    daemons.push(first);
    const c = await RawClient.connect(first.port);
    await c.go("crash", { structured: false });
    // Writes kept in flight until the daemon dies: each one a different 256 KiB block.
    const BLOCK = 256 * 1024;
    const written = new Map<bigint, Buffer>();
    const acknowledged: bigint[] = [];
    let next = 0n;
    const send = () => {
      const payload = randomBytes(BLOCK);
      written.set(next, payload);
      c.request(Cmd.WRITE, { offset: next * BigInt(BLOCK), payload, cookie: next });
      next++;
    };
    for (let i = 0; i < 16; i++) send();
    const replies = (async () => {
      for (;;) {
        const r = await c.simpleReply().catch(() => undefined);
        if (!r) return "ended";
        if (r.error === 0) acknowledged.push(r.cookie);
        if (next < 4096n) send();
      }
    })();
    await until(() => acknowledged.length >= 64, "64 writes answered", WAIT);
    assert.ok(first.log().includes('"path":"native"'), "the connection was on the native path");
    await first.stop("SIGKILL");
    assert.equal(await replies, "ended", "the client's connection ends");
    assert.ok(acknowledged.length < Number(next), "some writes were still in flight when it died");
    const bytes = readFileSync(volume.location);
    for (const cookie of acknowledged) {
      const at = Number(cookie) * BLOCK;
      assert.ok(bytes.subarray(at, at + BLOCK).equals(written.get(cookie) as Buffer), `acknowledged write ${cookie} is in the volume`);
    }
    // Its writer lock died with it (its process is gone): a new daemon exports the volume.
    const second = await Daemon.start(config, await freePort());
    daemons.push(second);
    const again = await RawClient.connect(second.port);
    await again.go("crash", { structured: false });
    const last = acknowledged[acknowledged.length - 1];
    again.request(Cmd.READ, { offset: last * BigInt(BLOCK), length: BLOCK, cookie: 1n });
    const back = await again.simpleReply(BLOCK);
    assert.equal(back.error, 0);
    assert.ok(back.data?.equals(written.get(last) as Buffer), "the new daemon reads the last acknowledged write");
    again.close();
  });
});

describe("kindling nbd serve with its native module missing", () => {
  let dir: string;
  let daemon: Daemon | undefined;

  before(() => {
    dir = tempDir();
  });
  after(async () => {
    await daemon?.stop("SIGKILL");
    removeDir(dir);
  });

  test("the daemon says so once and serves every connection by JavaScript; a real client writes and reads", async () => {
    const config = join(dir, "kindling.json");
    writeFileSync(config, JSON.stringify({ backends: { b: { driver: "file", path: join(dir, "volumes") } } }));
    const cli = cliFor(config);
    cli("volume", "create", "plain", "--size", "1");
    cli("connect", "plain", "--protocol", "nbd");
    daemon = await Daemon.start(config, await freePort(), { KINDLING_NBD_NATIVE_MODULE: join(dir, "no-such-module.node"), KINDLING_LOG_LEVEL: "debug" });
    const source = join(dir, "source");
    const data = randomBytes(8 * MiB);
    writeFileSync(source, data);
    const run = (command: string, args: string[]) => spawnSync(command, args, { encoding: "utf8", env: { ...process.env, PATH: `/usr/bin:${process.env.PATH}` } });
    for (const args of [[source, `${daemon.uri}/plain`], [`${daemon.uri}/plain`, join(dir, "back")]]) {
      const r = run("nbdcopy", args);
      assert.equal(r.status, 0, r.stderr);
    }
    assert.ok(readFileSync(join(dir, "back")).subarray(0, data.length).equals(data), "read back what was written");
    const d = daemon;
    await until(() => d.log().includes('"path":"javascript"'), "the daemon's log of the connections (read between the copies)", WAIT);
    const log = daemon.log();
    assert.equal(log.split("the native NBD data path cannot be loaded").length - 1, 1, log);
    assert.match(log, /no-such-module\.node/);
    assert.ok(log.includes('"path":"javascript"'), log);
    assert.ok(!log.includes('"path":"native"'), log);
    assert.equal(await daemon.stop(), 0);
    daemon = undefined;
  });
});
