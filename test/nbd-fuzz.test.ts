// A bounded fuzz run against the NBD server: random and mutated handshakes and requests from a
// fixed seed. The server must never crash, never touch bytes outside its export, keep its
// memory bounded, and still serve a well-behaved client afterwards.
import assert from "node:assert/strict";
import { connect } from "node:net";
import { readFileSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { FileBlockDevice } from "../provider/drivers/file/blockdevice";
import { NbdServer } from "../provider/nbd";
import { Cmd, IHAVEOPT, Option, REQUEST_MAGIC } from "../provider/util/nbd/protocol";
import { MiB } from "../provider/util/sizes";
import { removeDir, tempDir } from "./helpers/env";
import { RawClient, infoRequest, metaRequest, u32 } from "./helpers/nbd-client";

const CASES = Number(process.env.KINDLING_FUZZ_CASES ?? 3000);
const SEED = 0x6b696e64;

/** mulberry32: small, fast, and the same sequence on every run for a seed. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n: number) => Math.floor(next() * n), bytes: (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(next() * 256))) };
}

function option(opt: number, data: Buffer): Buffer {
  const head = Buffer.alloc(16);
  head.writeBigUInt64BE(IHAVEOPT, 0);
  head.writeUInt32BE(opt, 8);
  head.writeUInt32BE(data.length, 12);
  return Buffer.concat([head, data]);
}

function request(type: number, flags: number, offset: bigint, length: number, payload?: Buffer): Buffer {
  const head = Buffer.alloc(28);
  head.writeUInt32BE(REQUEST_MAGIC, 0);
  head.writeUInt16BE(flags, 4);
  head.writeUInt16BE(type, 6);
  head.writeBigUInt64BE(7n, 8);
  head.writeBigUInt64BE(offset, 16);
  head.writeUInt32BE(length, 24);
  return payload ? Buffer.concat([head, payload]) : head;
}

/** A client stream that is valid up to transmission, then `requests`. */
function validStream(requests: Buffer[]): Buffer {
  return Buffer.concat([
    u32(3),
    option(Option.STRUCTURED_REPLY, Buffer.alloc(0)),
    option(Option.SET_META_CONTEXT, metaRequest("disk", ["base:allocation"])),
    option(Option.GO, infoRequest("disk", [3])),
    ...requests,
  ]);
}

let dir: string;
let file: string;
let sentinel: string;
let server: NbdServer;
let port: number;
const SIZE = 4 * MiB;

before(async () => {
  dir = tempDir();
  file = join(dir, "disk");
  sentinel = join(dir, "sentinel");
  writeFileSync(file, Buffer.alloc(0));
  truncateSync(file, SIZE);
  writeFileSync(sentinel, "must not change");
  server = new NbdServer({ port: 0 });
  server.exports.set({ name: "disk", readOnly: false, open: () => FileBlockDevice.open(file, false) });
  ({ port } = await server.listen());
});
after(async () => {
  await server.close();
  removeDir(dir);
});

/** Sends one case and waits until the server answers, closes, or 30 ms pass. */
function send(bytes: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      socket.destroy();
      resolve();
    };
    socket.on("error", finish);
    socket.on("close", finish);
    socket.on("data", () => undefined);
    socket.once("connect", () => {
      socket.write(bytes);
      setTimeout(finish, 30);
    });
  });
}

test(`fuzz: ${CASES} random and mutated sessions from seed ${SEED.toString(16)}`, async () => {
  const rng = prng(SEED);
  const rssBefore = process.memoryUsage().rss;
  const types = [Cmd.READ, Cmd.WRITE, Cmd.FLUSH, Cmd.TRIM, Cmd.CACHE, Cmd.WRITE_ZEROES, Cmd.BLOCK_STATUS, Cmd.DISC, 42];
  const offsets = () => [0n, BigInt(rng.int(SIZE)), BigInt(SIZE - 1), BigInt(SIZE), 2n ** 63n, 2n ** 64n - 1n, BigInt(rng.int(2 ** 31)) * 4096n][rng.int(7)];
  const lengths = () => [0, 1, 512, rng.int(65536), 32 * MiB, 2 ** 32 - 1, rng.int(2 ** 32)][rng.int(7)];
  const makeCase = (): Buffer => {
    switch (rng.int(4)) {
      case 0: // random bytes from the start
        return rng.bytes(rng.int(200));
      case 1: { // a valid handshake with some bytes flipped
        const stream = Buffer.from(validStream([request(Cmd.READ, 0, 0n, 512)]));
        for (let i = 0, n = 1 + rng.int(4); i < n; i++) stream[rng.int(stream.length)] = rng.int(256);
        return stream;
      }
      case 2: { // random options
        const parts = [u32(rng.int(4))];
        for (let i = 0, n = rng.int(4); i < n; i++) parts.push(option(rng.int(14), rng.bytes(rng.int(40))));
        return Buffer.concat(parts);
      }
      default: { // valid handshake, then random requests (payloads only as long as they are small)
        const requests: Buffer[] = [];
        for (let i = 0, n = 1 + rng.int(6); i < n; i++) {
          const type = types[rng.int(types.length)];
          const length = lengths();
          const payload = type === Cmd.WRITE && length <= 65536 ? rng.bytes(length) : undefined;
          requests.push(request(type, rng.int(4) === 0 ? rng.int(65536) : 0, offsets(), length, payload));
        }
        if (rng.int(3) === 0) requests.push(rng.bytes(rng.int(64)));
        return validStream(requests);
      }
    }
  };
  const cases = Array.from({ length: CASES }, makeCase);
  for (let i = 0; i < cases.length; i += 16) await Promise.all(cases.slice(i, i + 16).map(send));

  assert.equal(statSync(file).size, SIZE, "the export never grew: nothing was written past its end");
  assert.equal(readFileSync(sentinel, "utf8"), "must not change");
  const grown = process.memoryUsage().rss - rssBefore;
  assert.ok(grown < 256 * MiB, `memory stayed bounded (grew ${Math.round(grown / MiB)} MiB)`);
  // And a well-behaved client is still served.
  for (let wait = 0; wait < 50 && server.connections > 0; wait++) await new Promise((r) => setTimeout(r, 100));
  assert.equal(server.connections, 0, "every fuzz connection was closed");
  const c = await RawClient.connect(port);
  await c.go("disk");
  c.request(Cmd.WRITE, { offset: 8192n, payload: Buffer.alloc(512, 9), cookie: 1n });
  await c.structuredReply();
  c.request(Cmd.READ, { offset: 8192n, length: 512, cookie: 2n });
  const r = await c.structuredReply();
  assert.ok(r.chunks[0].data.subarray(8).equals(Buffer.alloc(512, 9)));
  c.close();
});
