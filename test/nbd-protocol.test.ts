// The NBD protocol scenarios of notes/nbd.md section 6, each with the spec's answer, driven by
// a bare client that can send what real clients never would.
import assert from "node:assert/strict";
import { readFileSync, readdirSync, readlinkSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { BlockDevice } from "../provider/drivers/contract";
import { FileBlockDevice } from "../provider/drivers/file/blockdevice";
import { NbdServer } from "../provider/nbd";
import { nativeTransmission } from "../provider/nbd/native/module";
import { Chunk, Cmd, CmdFlag, Errno, Info, Option, Reply, Tx } from "../provider/util/nbd/protocol";
import { MiB } from "../provider/util/sizes";
import { removeDir, tempDir } from "./helpers/env";
import { RawClient, infoRequest, metaRequest } from "./helpers/nbd-client";
import { openFds, until } from "./helpers/wait";

/** A real file device whose reads fail inside one range: a disk with a bad sector. */
function failingInside(device: BlockDevice, from: number, to: number): BlockDevice {
  return new Proxy(device, {
    get(target, prop, receiver) {
      if (prop === "native") return undefined; // its reads are not the file's
      if (prop === "pread") {
        return async (buffer: Buffer, offset: number) => {
          if (offset < to && offset + buffer.length > from) throw Object.assign(new Error("bad sector"), { code: "EIO" });
          return target.pread(buffer, offset);
        };
      }
      const value = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/**
 * A real file device that fills only the first half of each read, scribbles over the rest and
 * says it read half: a device the server must not trust with what lies past its count.
 */
function fillingHalf(device: BlockDevice): BlockDevice {
  return new Proxy(device, {
    get(target, prop, receiver) {
      if (prop === "native") return undefined; // its reads are not the file's
      if (prop === "pread") {
        return async (buffer: Buffer, offset: number) => {
          const half = Math.floor(buffer.length / 2);
          const got = await target.pread(buffer.subarray(0, half), offset);
          buffer.fill(0xee, got);
          return got;
        };
      }
      const value = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** A real file device that claims more bytes than it was asked for. */
function overReporting(device: BlockDevice): BlockDevice {
  return new Proxy(device, {
    get(target, prop, receiver) {
      if (prop === "native") return undefined; // its reads are not the file's
      if (prop === "pread") return async (buffer: Buffer, offset: number) => (await target.pread(buffer, offset)) + 1;
      const value = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}



const WAIT = { tries: 100, everyMs: 50 };

describe("NBD protocol", () => {
  let dir: string;
  let server: NbdServer;
  let port: number;
  const SIZE = 16 * MiB;

  before(async () => {
    dir = tempDir();
    const file = join(dir, "disk");
    writeFileSync(file, Buffer.alloc(0));
    truncateSync(file, SIZE);
    server = new NbdServer({ port: 0 });
    server.exports.set({ name: "disk", readOnly: false, open: () => FileBlockDevice.open(file, false) });
    server.exports.set({ name: "ro", readOnly: true, open: () => FileBlockDevice.open(file, true) });
    server.exports.set({ name: "bad", readOnly: false, open: async () => failingInside(await FileBlockDevice.open(file, false), 8 * MiB, 8 * MiB + 4096) });
    server.exports.set({ name: "ünïcode-名前", readOnly: true, open: () => FileBlockDevice.open(file, true) });
    const big = join(dir, "big");
    writeFileSync(big, Buffer.alloc(0));
    truncateSync(big, 80 * MiB);
    server.exports.set({ name: "big", readOnly: false, open: () => FileBlockDevice.open(big, false) });
    ({ port } = await server.listen());
  });
  after(async () => {
    await server.close();
    removeDir(dir);
  });

  const client = () => RawClient.connect(port);

  test("greeting: fixed newstyle with NO_ZEROES", async () => {
    const c = await client();
    assert.equal(await c.greet(), 3);
    c.close();
  });

  test("1. client flags with an unknown bit: the server closes", async () => {
    const c = await client();
    await c.greet(1 | 4);
    assert.equal(await c.closed(), true);
  });

  test("2. an option with bad magic: hard disconnect", async () => {
    const c = await client();
    await c.greet();
    c.option(Option.LIST, Buffer.alloc(0), 0x1234n);
    assert.equal(await c.closed(), true);
  });

  test("3. an unknown option with a payload: ERR_UNSUP, and the session goes on", async () => {
    const c = await client();
    await c.greet();
    c.option(99, Buffer.from("abc"));
    const [r] = await c.optionReplies();
    assert.equal(r.type, Reply.ERR_UNSUP);
    c.option(Option.EXTENDED_HEADERS);
    assert.equal((await c.optionReplies())[0].type, Reply.ERR_UNSUP);
    c.option(Option.GO, infoRequest("disk", []));
    assert.equal((await c.optionReplies()).at(-1)?.type, Reply.ACK);
    c.close();
  });

  test("4. LIST with data and INFO with a name longer than the option: ERR_INVALID, in sync", async () => {
    const c = await client();
    await c.greet();
    c.option(Option.LIST, Buffer.from("x"));
    assert.equal((await c.optionReplies())[0].type, Reply.ERR_INVALID);
    const bad = infoRequest("disk", []);
    bad.writeUInt32BE(100, 0);
    c.option(Option.INFO, bad);
    assert.equal((await c.optionReplies())[0].type, Reply.ERR_INVALID);
    c.option(Option.LIST);
    const list = await c.optionReplies();
    const names = list.filter((r) => r.type === Reply.SERVER).map((r) => r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString("utf8"));
    assert.deepEqual(names.sort(), ["bad", "big", "disk", "ro", "ünïcode-名前"].sort(), "name lengths are UTF-8 bytes");
    c.close();
  });

  test("5. GO for an unknown export: ERR_UNKNOWN; EXPORT_NAME for one: close", async () => {
    const c = await client();
    await c.greet();
    c.option(Option.GO, infoRequest("nope", []));
    assert.equal((await c.optionReplies())[0].type, Reply.ERR_UNKNOWN);
    c.option(Option.EXPORT_NAME, Buffer.from("nope"));
    assert.equal(await c.closed(), true);
  });

  test("6. GO asking for BLOCK_SIZE: INFO_EXPORT, BLOCK_SIZE, ACK; INFO says the same", async () => {
    const c = await client();
    await c.greet();
    c.option(Option.INFO, infoRequest("disk", [Info.BLOCK_SIZE]));
    const info = await c.optionReplies();
    c.option(Option.GO, infoRequest("disk", [Info.BLOCK_SIZE]));
    const go = await c.optionReplies();
    assert.deepEqual(go.map((r) => [r.type, r.data.toString("hex")]), info.map((r) => [r.type, r.data.toString("hex")]));
    const exportInfo = go.find((r) => r.type === Reply.INFO && r.data.readUInt16BE(0) === Info.EXPORT);
    assert.equal(exportInfo?.data.length, 12);
    assert.equal(exportInfo?.data.readBigUInt64BE(2), BigInt(SIZE));
    const sizes = go.find((r) => r.type === Reply.INFO && r.data.readUInt16BE(0) === Info.BLOCK_SIZE);
    assert.equal(sizes?.data.length, 14);
    assert.deepEqual([sizes?.data.readUInt32BE(2), sizes?.data.readUInt32BE(6), sizes?.data.readUInt32BE(10)], [1, 4096, 64 * MiB]);
    // No padding after GO: the next bytes are a reply to the first request.
    c.request(Cmd.READ, { cookie: 7n, length: 512 });
    const r = await c.simpleReply(512);
    assert.equal(r.cookie, 7n);
    assert.equal(r.error, 0);
    c.close();
  });

  test("7. STARTTLS without TLS: ERR_POLICY; SET_META_CONTEXT before STRUCTURED_REPLY: ERR_INVALID; ABORT: ACK", async () => {
    const c = await client();
    await c.greet();
    c.option(Option.STARTTLS);
    assert.equal((await c.optionReplies())[0].type, Reply.ERR_POLICY);
    c.option(Option.SET_META_CONTEXT, metaRequest("disk", ["base:allocation"]));
    assert.equal((await c.optionReplies())[0].type, Reply.ERR_INVALID);
    c.option(Option.STRUCTURED_REPLY);
    assert.equal((await c.optionReplies())[0].type, Reply.ACK);
    c.option(Option.STRUCTURED_REPLY);
    assert.equal((await c.optionReplies())[0].type, Reply.ERR_INVALID, "twice is invalid");
    c.option(Option.LIST_META_CONTEXT, metaRequest("disk", []));
    const listed = await c.optionReplies();
    assert.equal(listed[0].type, Reply.META_CONTEXT);
    assert.equal(listed[0].data.subarray(4).toString(), "base:allocation");
    c.option(Option.ABORT);
    assert.equal((await c.optionReplies())[0].type, Reply.ACK);
    assert.equal(await c.closed(), true);
  });

  test("8. EXPORT_NAME: 10 bytes with NO_ZEROES, 134 without", async () => {
    for (const [flags, length] of [[3, 10], [1, 134]]) {
      const c = await client();
      await c.greet(flags);
      c.option(Option.EXPORT_NAME, Buffer.from("disk"));
      const tail = await c.read(length);
      assert.equal(tail.readBigUInt64BE(0), BigInt(SIZE));
      assert.ok(tail.readUInt16BE(8) & Tx.HAS_FLAGS);
      if (length === 134) assert.ok(tail.subarray(10).equals(Buffer.alloc(124)));
      c.request(Cmd.FLUSH, { cookie: 9n });
      assert.equal((await c.simpleReply()).error, 0, "in transmission right after");
      c.close();
    }
  });

  test("9-12. errors that keep the connection usable", async () => {
    const c = await client();
    await c.go("disk", { structured: false });
    const expectError = async (errno: number) => assert.equal((await c.simpleReply()).error, errno);
    c.request(Cmd.READ, { offset: BigInt(SIZE - 512), length: 1024 });
    await expectError(Errno.EINVAL); // 9: read across the end, no payload follows
    c.request(Cmd.WRITE, { offset: BigInt(SIZE - 512), payload: Buffer.alloc(1024, 1) });
    await expectError(Errno.ENOSPC); // 10: its payload is drained
    c.request(42);
    await expectError(Errno.EINVAL); // 11: unknown command
    c.request(Cmd.READ, { flags: 0x8000, length: 512 });
    await expectError(Errno.EINVAL); // 11: unknown flag
    c.request(Cmd.BLOCK_STATUS, { length: 512 });
    await expectError(Errno.EINVAL); // 11: no metadata context
    c.request(Cmd.READ, { flags: CmdFlag.DF, length: 512 });
    await expectError(Errno.EINVAL); // DF without structured replies
    c.request(Cmd.READ, { length: 0, cookie: 12n });
    const zero = await c.simpleReply(0); // 12: zero-length read
    assert.deepEqual([zero.error, zero.cookie], [0, 12n]);
    c.request(Cmd.WRITE, { offset: 4096n, payload: Buffer.alloc(4096, 0x5a), cookie: 13n });
    assert.equal((await c.simpleReply()).error, 0);
    c.request(Cmd.READ, { offset: 4096n, length: 4096, cookie: 14n });
    const back = await c.simpleReply(4096);
    assert.ok(back.data.equals(Buffer.alloc(4096, 0x5a)), "still in sync after all the errors");
    c.close();
  });

  test("13. 64 MiB requests are served without block-size negotiation; above: READ gets EINVAL and goes on, WRITE EINVAL and a disconnect", async () => {
    const c = await client();
    await c.go("big", { structured: false });
    const payload = Buffer.alloc(64 * MiB);
    for (let at = 0; at < payload.length; at += 4096) payload.writeUInt32BE(at, at);
    c.request(Cmd.WRITE, { offset: 4096n, payload, cookie: 1n });
    assert.equal((await c.simpleReply()).error, 0, "a 64 MiB write");
    c.request(Cmd.READ, { offset: 4096n, length: 64 * MiB, cookie: 2n });
    const back = await c.simpleReply(64 * MiB);
    assert.deepEqual([back.error, back.cookie], [0, 2n]);
    assert.ok(back.data.equals(payload), "a 64 MiB read returns what was written");
    c.request(Cmd.READ, { length: 64 * MiB + 1 });
    assert.equal((await c.simpleReply()).error, Errno.EINVAL);
    c.request(Cmd.READ, { length: 512, cookie: 3n });
    assert.equal((await c.simpleReply(512)).error, 0);
    c.request(Cmd.WRITE, { length: 64 * MiB + 1 });
    assert.equal((await c.simpleReply()).error, Errno.EINVAL);
    assert.equal(await c.closed(), true);
  });

  test("14. bad request magic, a short WRITE then EOF, a client killed with reads in flight: the server survives", async () => {
    const a = await client();
    await a.go("disk");
    a.request(Cmd.READ, { magic: 0xdeadbeef, length: 512 });
    assert.equal(await a.closed(), true);
    const b = await client();
    await b.go("disk");
    b.request(Cmd.WRITE, { length: 4096 });
    b.write(Buffer.alloc(100));
    b.socket.end();
    const d = await client();
    await d.go("disk");
    for (let i = 0; i < 32; i++) d.request(Cmd.READ, { cookie: BigInt(i), offset: BigInt(i * MiB / 4), length: MiB / 4 });
    d.socket.destroy();
    const e = await client();
    await e.go("disk");
    e.request(Cmd.READ, { length: 512, cookie: 5n });
    const r = await e.structuredReply();
    assert.equal(r.cookie, 5n);
    e.close();
  });

  test("15. a READ pipelined before DISC is answered, then the connection closes without a DISC reply", async () => {
    const c = await client();
    await c.go("disk", { structured: false });
    c.request(Cmd.READ, { cookie: 21n, length: 4096 });
    c.request(Cmd.DISC, { cookie: 22n });
    const r = await c.simpleReply(4096);
    assert.equal(r.cookie, 21n);
    assert.equal(await c.closed(), true);
  });

  test("offsets near 2^63 and offset+length overflow: EINVAL, no crash", async () => {
    const c = await client();
    await c.go("disk");
    for (const [offset, length] of [[2n ** 63n, 512], [2n ** 63n - 512n, 1024], [2n ** 64n - 1n, 2]] as const) {
      c.request(Cmd.READ, { offset, length });
      const r = await c.structuredReply();
      assert.equal(r.chunks[0].type, Chunk.ERROR);
      assert.equal(r.chunks[0].data.readUInt32BE(0), Errno.EINVAL);
      c.request(Cmd.WRITE, { offset, payload: Buffer.alloc(length) });
      assert.equal((await c.structuredReply()).chunks[0].data.readUInt32BE(0), Errno.ENOSPC);
    }
    c.close();
  });

  test("a backend error inside a structured read: ERROR_OFFSET saying where", async () => {
    const c = await client();
    await c.go("bad");
    c.request(Cmd.READ, { offset: BigInt(8 * MiB - 4096), length: 16384, cookie: 31n });
    const r = await c.structuredReply();
    assert.equal(r.cookie, 31n);
    assert.equal(r.chunks[0].type, Chunk.ERROR_OFFSET);
    assert.equal(r.chunks[0].data.readUInt32BE(0), Errno.EIO);
    const messageLength = r.chunks[0].data.readUInt16BE(4);
    assert.match(r.chunks[0].data.subarray(6, 6 + messageLength).toString(), /bad sector/);
    assert.equal(r.chunks[0].data.readBigUInt64BE(6 + messageLength), BigInt(8 * MiB - 4096));
    c.request(Cmd.READ, { offset: 0n, length: 512, cookie: 32n });
    assert.equal((await c.structuredReply()).cookie, 32n, "the connection goes on");
    c.close();
  });

  test("structured reads: holes as OFFSET_HOLE, data as OFFSET_DATA; block status per base:allocation", async () => {
    const c = await client();
    const { flags } = await c.go("disk");
    assert.ok(flags & Tx.SEND_DF && flags & Tx.SEND_WRITE_ZEROES && flags & Tx.SEND_TRIM && flags & Tx.CAN_MULTI_CONN);
    // The region 10-14 MiB is this test's own: other tests write below it.
    const at = 11 * MiB;
    c.request(Cmd.WRITE, { offset: BigInt(at), payload: Buffer.alloc(MiB, 0x77), cookie: 1n });
    await c.structuredReply();
    c.request(Cmd.READ, { offset: BigInt(13 * MiB), length: 65536, cookie: 2n });
    assert.equal((await c.structuredReply()).chunks[0].type, Chunk.OFFSET_HOLE);
    c.request(Cmd.READ, { offset: BigInt(at), length: 65536, flags: CmdFlag.DF, cookie: 3n });
    const data = (await c.structuredReply()).chunks[0];
    assert.equal(data.type, Chunk.OFFSET_DATA);
    assert.equal(data.data.readBigUInt64BE(0), BigInt(at));
    assert.ok(data.data.subarray(8).equals(Buffer.alloc(65536, 0x77)));
    c.request(Cmd.BLOCK_STATUS, { offset: BigInt(10 * MiB), length: 4 * MiB, cookie: 4n });
    const status = (await c.structuredReply()).chunks[0];
    assert.equal(status.type, Chunk.BLOCK_STATUS);
    const extents: Array<[number, number]> = [];
    for (let i = 4; i < status.data.length; i += 8) extents.push([status.data.readUInt32BE(i), status.data.readUInt32BE(i + 4)]);
    assert.deepEqual(extents, [[MiB, 3], [MiB, 0], [2 * MiB, 3]]);
    c.request(Cmd.BLOCK_STATUS, { offset: BigInt(10 * MiB), length: 4 * MiB, flags: CmdFlag.REQ_ONE, cookie: 5n });
    assert.equal((await c.structuredReply()).chunks[0].data.length, 12, "REQ_ONE: one extent");
    c.request(Cmd.WRITE_ZEROES, { offset: BigInt(at), length: MiB, cookie: 6n });
    assert.equal((await c.structuredReply()).chunks[0].type, Chunk.NONE);
    c.request(Cmd.READ, { offset: BigInt(at), length: 4096, cookie: 7n });
    assert.equal((await c.structuredReply()).chunks[0].type, Chunk.OFFSET_HOLE, "zeroed");
    c.close();
  });

  test("read-only exports refuse writes with EPERM", async () => {
    const c = await client();
    const { flags } = await c.go("ro");
    assert.ok(flags & Tx.READ_ONLY);
    for (const type of [Cmd.WRITE, Cmd.TRIM, Cmd.WRITE_ZEROES]) {
      c.request(type, { length: 512, payload: type === Cmd.WRITE ? Buffer.alloc(512) : undefined });
      assert.equal((await c.structuredReply()).chunks[0].data.readUInt32BE(0), Errno.EPERM);
    }
    c.close();
  });

  test("pipelined requests are all answered, each with its own cookie", async () => {
    const c = await client();
    await c.go("disk");
    const n = 200;
    for (let i = 0; i < n; i++) {
      if (i % 2) c.request(Cmd.READ, { cookie: BigInt(i), offset: BigInt((i % 64) * 65536), length: 65536 });
      else c.request(Cmd.WRITE, { cookie: BigInt(i), offset: BigInt((i % 64) * 65536), payload: Buffer.alloc(65536, i % 256) });
    }
    const cookies = new Set<bigint>();
    for (let i = 0; i < n; i++) {
      const r = await c.structuredReply();
      assert.ok(r.chunks.every((ch) => ch.type !== Chunk.ERROR && ch.type !== Chunk.ERROR_OFFSET));
      cookies.add(r.cookie);
    }
    assert.equal(cookies.size, n);
    c.close();
  });

  test("export names may be any UTF-8 but are only names: a path is unknown", async () => {
    const c = await client();
    await c.greet();
    c.option(Option.GO, infoRequest("ünïcode-名前", []));
    assert.equal((await c.optionReplies()).at(-1)?.type, Reply.ACK);
    const d = await client();
    await d.greet();
    d.option(Option.GO, infoRequest("../../etc/passwd", []));
    assert.equal((await d.optionReplies())[0].type, Reply.ERR_UNKNOWN);
    c.close();
    d.close();
  });

  test("the connections were served by the data path this run asks for (KINDLING_NBD_NATIVE)", () => {
    if (process.env.KINDLING_NBD_NATIVE === "off") {
      assert.equal(server.served.native, 0);
      assert.ok(server.served.javascript > 10, `${server.served.javascript} connections`);
      return;
    }
    assert.ok(nativeTransmission(), "the native data path is built (make setup builds dist/native)");
    assert.ok(server.served.native > 10, `${server.served.native} connections served natively`);
    // A device whose reads are not its file's (the bad-sector export) has no native target.
    assert.ok(server.served.javascript >= 1, `${server.served.javascript} served by JavaScript`);
  });
});

describe("NBD: a client gets the export's bytes and the device it was told about", () => {
  let dir: string;
  let server: NbdServer;
  let port: number;
  const file = (name: string) => join(dir, name);

  before(async () => {
    dir = tempDir();
    for (const name of ["shrinking", "grown", "a", "b", "marked"]) {
      writeFileSync(file(name), Buffer.alloc(0));
      truncateSync(file(name), 4 * MiB);
    }
    writeFileSync(file("marked"), Buffer.alloc(4 * MiB, 0x6b));
    server = new NbdServer({ port: 0 });
    for (const name of ["shrinking", "grown", "a", "b"]) server.exports.set({ name, readOnly: false, open: () => FileBlockDevice.open(file(name), false) });
    server.exports.set({ name: "half", readOnly: true, open: async () => fillingHalf(await FileBlockDevice.open(file("marked"), true)) });
    server.exports.set({ name: "over", readOnly: true, open: async () => overReporting(await FileBlockDevice.open(file("marked"), true)) });
    ({ port } = await server.listen());
  });
  after(async () => {
    await server.close();
    removeDir(dir);
  });

  test("D1: a file shortened after the client connected reads as zeroes past its new end, over simple and structured replies", async () => {
    writeFileSync(file("shrinking"), Buffer.alloc(4 * MiB, 0x5c));
    const simple = await RawClient.connect(port);
    await simple.go("shrinking", { structured: false });
    const structured = await RawClient.connect(port);
    await structured.go("shrinking");
    truncateSync(file("shrinking"), MiB);
    for (const length of [512, 3000, 4096, 65536]) {
      // Straddling the new end: the part before it is the file's, the rest zeroes.
      const offset = MiB - 256;
      const expected = Buffer.concat([Buffer.alloc(256, 0x5c), Buffer.alloc(length - 256)]);
      simple.request(Cmd.READ, { offset: BigInt(offset), length });
      const r = await simple.simpleReply(length);
      assert.equal(r.error, 0);
      assert.ok(r.data.equals(expected), `simple read of ${length}`);
      structured.request(Cmd.READ, { offset: BigInt(offset), length });
      const [chunk] = (await structured.structuredReply()).chunks;
      assert.equal(chunk.type, Chunk.OFFSET_DATA);
      assert.ok(chunk.data.subarray(8).equals(expected), `structured read of ${length}`);
      structured.request(Cmd.READ, { offset: BigInt(2 * MiB), length });
      assert.equal((await structured.structuredReply()).chunks[0].type, Chunk.OFFSET_HOLE, "wholly past the end: a hole");
    }
    simple.close();
    structured.close();
  });

  test("D1: what a device leaves past the count it returns never reaches the client; a count larger than asked is EIO", async () => {
    for (const structured of [false, true]) {
      const c = await RawClient.connect(port);
      await c.go("half", { structured });
      c.request(Cmd.READ, { offset: 0n, length: 8192 });
      const expected = Buffer.concat([Buffer.alloc(4096, 0x6b), Buffer.alloc(4096)]);
      const data = structured ? (await c.structuredReply()).chunks[0].data.subarray(8) : (await c.simpleReply(8192)).data;
      assert.ok(data.equals(expected), `the device's half, then zeroes (${structured ? "structured" : "simple"})`);
      c.close();
      const o = await RawClient.connect(port);
      await o.go("over", { structured });
      o.request(Cmd.READ, { offset: 0n, length: 4096 });
      if (structured) assert.equal((await o.structuredReply()).chunks[0].data.readUInt32BE(0), Errno.EIO);
      else assert.equal((await o.simpleReply()).error, Errno.EIO);
      o.close();
    }
  });

  test("INFO then GO describe one device, and it is the one the transmission uses", async () => {
    const c = await RawClient.connect(port);
    await c.greet();
    c.option(Option.INFO, infoRequest("grown", []));
    const sizeOf = (replies: Array<{ type: number; data: Buffer }>) => replies.find((r) => r.type === Reply.INFO && r.data.readUInt16BE(0) === Info.EXPORT)?.data.readBigUInt64BE(2);
    assert.equal(sizeOf(await c.optionReplies()), BigInt(4 * MiB));
    truncateSync(file("grown"), 8 * MiB);
    c.option(Option.GO, infoRequest("grown", []));
    assert.equal(sizeOf(await c.optionReplies()), BigInt(4 * MiB), "GO says what INFO said");
    c.request(Cmd.READ, { offset: BigInt(4 * MiB), length: 512 });
    assert.equal((await c.simpleReply()).error, Errno.EINVAL, "and the transmission holds to it");
    c.close();
    const fresh = await RawClient.connect(port);
    assert.equal((await fresh.go("grown", { structured: false })).size, BigInt(8 * MiB), "a new connection sees the new size");
    fresh.close();
  });

  test("the device opened for INFO is closed when the client aborts or picks another export", async () => {
    const c = await RawClient.connect(port);
    await c.greet();
    c.option(Option.INFO, infoRequest("a", []));
    await c.optionReplies();
    assert.equal(openFds(file("a")), 1, "INFO opened a's device");
    c.option(Option.GO, infoRequest("b", []));
    await c.optionReplies();
    assert.equal(openFds(file("a")), 0, "closed when the client chose b");
    assert.equal(openFds(file("b")), 1);
    c.close();
    await until(() => openFds(file("b")) === 0, "b's device to close with the connection", WAIT);
    const d = await RawClient.connect(port);
    await d.greet();
    d.option(Option.INFO, infoRequest("a", []));
    await d.optionReplies();
    d.option(Option.ABORT);
    await d.optionReplies();
    await until(() => openFds(file("a")) === 0, "a's device to close after ABORT", WAIT);
    d.close();
  });

  test("closeSource ends the connections of one export only; what they had acknowledged is in the file", async () => {
    const a = await RawClient.connect(port);
    await a.go("a", { structured: false });
    const b = await RawClient.connect(port);
    await b.go("b", { structured: false });
    const source = server.exports.get("a");
    assert.ok(source);
    a.request(Cmd.WRITE, { cookie: 7n, offset: 0n, payload: Buffer.alloc(4096, 0x11) });
    assert.equal((await a.simpleReply()).error, 0);
    server.exports.delete("a");
    assert.equal(await server.closeSource(source), 1, "one connection served it");
    assert.equal(await a.closed(), true, "it is closed");
    assert.ok(readFileSync(file("a")).subarray(0, 4096).equals(Buffer.alloc(4096, 0x11)));
    b.request(Cmd.READ, { cookie: 8n, offset: 0n, length: 512 });
    assert.equal((await b.simpleReply(512)).error, 0, "another export's client goes on");
    b.close();
    const late = await RawClient.connect(port);
    await late.greet();
    late.option(Option.GO, infoRequest("a", []));
    assert.equal((await late.optionReplies())[0].type, Reply.ERR_UNKNOWN);
    late.close();
  });
});
