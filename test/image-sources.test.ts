// Image sources (files and http(s) URLs) with digests and decompression, against a real
// loopback http and https server and the real xz, zstd and bzip2 tools: what a source hands
// out is the file's bytes or an error, never fewer or other bytes.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { Writable, type Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import { DigestCheck, hexDigest, IntegrityError, type Digest } from "../provider/images/digest";
import { uncompressed } from "../provider/images/decompress";
import { FileSource } from "../provider/images/sources/file";
import { HttpSource } from "../provider/images/sources/http";
import { parseImageRef } from "../provider/images/sources/ref";
import { InvalidInputError, NotFoundError } from "../provider/util/errors";
import { REDACT_PATHS } from "../provider/util/log";
import pino from "pino";
import { removeDir, tempDir } from "./helpers/env";
import { startImageServer, type ImageServer } from "./helpers/image-http";

const MiB = 1024 * 1024;
const sha = (algo: string, b: Buffer) => createHash(algo).update(b).digest("hex");

/** Everything a stream gives, or its error. */
async function drain(stream: Readable, check?: DigestCheck): Promise<Buffer> {
  const parts: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      parts.push(chunk);
      done();
    },
  });
  if (check) await pipeline(stream, check, sink);
  else await pipeline(stream, sink);
  return Buffer.concat(parts);
}

let dir: string;
let image: Buffer;
let plain: ImageServer;
let secure: ImageServer;
let ca: string;

before(async () => {
  dir = tempDir("kindling-images-");
  const www = join(dir, "www");
  mkdirSync(www);
  // Random data with a long run of zeroes in the middle, like a disk image.
  image = Buffer.concat([randomBytes(3 * MiB), Buffer.alloc(2 * MiB), randomBytes(1 * MiB + 12345)]);
  writeFileSync(join(www, "disk.raw"), image);
  plain = await startImageServer(www);
  const pki = join(dir, "pki");
  mkdirSync(pki);
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", join(pki, "key.pem"), "-out", join(pki, "cert.pem"),
    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
  ca = readFileSync(join(pki, "cert.pem"), "utf8");
  secure = await startImageServer(www, { key: readFileSync(join(pki, "key.pem"), "utf8"), cert: ca });
});

after(async () => {
  await plain?.close();
  await secure?.close();
  removeDir(dir);
});

describe("image references and digests", () => {
  test("references: service:NAME, file:PATH and URLs; anything else names the field and the forms", () => {
    assert.deepEqual(parseImageRef("glance:ubuntu-24.04", ["glance"]), { kind: "service", service: "glance", image: "ubuntu-24.04" });
    assert.deepEqual(parseImageRef("file:/srv/images/a b.qcow2", ["glance"]), { kind: "file", path: "/srv/images/a b.qcow2" });
    assert.deepEqual(parseImageRef("https://example.org/x.img", []), { kind: "url", url: "https://example.org/x.img" });
    assert.throws(() => parseImageRef("cirros", ["glance"]), (e: unknown) => e instanceof InvalidInputError && e.field === "image" && /glance:NAME_OR_ID/.test(e.message));
    assert.throws(() => parseImageRef("other:cirros", ["glance"], "volume.image"), (e: unknown) => e instanceof InvalidInputError && e.field === "volume.image" && /no image service "other"/.test(e.message));
    assert.throws(() => parseImageRef("glance:", ["glance"]), /needs an image name or id/);
  });

  test("digests are hex of the algorithm's length, named by the field that gave them", () => {
    assert.equal(hexDigest("sha256", "AB".repeat(32), "--sha256", "sha256").value, "ab".repeat(32));
    assert.throws(() => hexDigest("sha256", "abc", "--sha256", "sha256"), (e: unknown) => e instanceof InvalidInputError && e.field === "sha256");
    assert.throws(() => hexDigest("sha512", "ab".repeat(32), "--sha512", "sha512"), /128 hex digits/);
  });
});

describe("image service secrets in logs", () => {
  test("an image service's token is censored wherever a config holding it is logged", () => {
    const lines: string[] = [];
    const log = pino({ redact: { paths: REDACT_PATHS, censor: "[secret]" } }, { write: (l: string) => void lines.push(l) });
    const imageServices = { glance: { type: "glance", endpoint: "http://127.0.0.1:9292", auth: { type: "token", token: "tok-hunter2" } } };
    log.warn({ imageServices }, "a");
    log.warn({ config: { imageServices } }, "b");
    log.warn({ loaded: { config: { imageServices } } }, "c");
    assert.equal(lines.length, 3);
    for (const line of lines) {
      assert.ok(!line.includes("tok-hunter2"), line);
      assert.ok(line.includes("[secret]"), line);
    }
  });
});

describe("a file source", () => {
  test("hands out the file from any offset, names it by inode until a digest names it, and checks every digest", async () => {
    const path = join(dir, "www", "disk.raw");
    const unvouched = await new FileSource(path).describe();
    assert.equal(unvouched.sizeBytes, image.length);
    assert.match(unvouched.identity ?? "", /^file:\d+:\d+:\d+:/);
    const expect: Digest[] = [hexDigest("sha256", sha("sha256", image), "--sha256", "sha256"), hexDigest("sha512", sha("sha512", image), "--sha512", "sha512")];
    const source = new FileSource(path, expect);
    const d = await source.describe();
    assert.equal(d.identity, `sha256:${sha("sha256", image)}`);
    const check = new DigestCheck(d.expect);
    assert.deepEqual(await drain(await source.open(), check), image);
    check.verify("the image");
    assert.deepEqual(await drain(await source.open({ offset: 5 * MiB })), image.subarray(5 * MiB));
  });

  test("a wrong digest is an IntegrityError naming who vouched for it; a directory or a missing file is refused", async () => {
    const path = join(dir, "www", "disk.raw");
    const wrong = sha("sha256", Buffer.concat([image.subarray(0, 100), Buffer.from([image[100] ^ 1]), image.subarray(101)]));
    const source = new FileSource(path, [hexDigest("sha256", wrong, "--sha256", "sha256")]);
    const check = new DigestCheck((await source.describe()).expect);
    await drain(await source.open(), check);
    assert.throws(() => check.verify("the image"), (e: unknown) => e instanceof IntegrityError && /--sha256 says/.test(e.message) && e.message.includes(wrong));
    await assert.rejects(new FileSource(dir).describe(), (e: unknown) => e instanceof InvalidInputError && /not a regular file/.test(e.message));
    await assert.rejects(new FileSource(join(dir, "nothing.img")).describe(), NotFoundError);
  });
});

describe("an http(s) source", () => {
  test("the whole image, its size, ETag identity and Content-MD5; then resumed from an offset with Range", async () => {
    const source = new HttpSource({ url: `${plain.url}/md5/disk.raw` });
    const d = await source.describe();
    assert.equal(d.sizeBytes, image.length);
    assert.equal(d.rangeable, true);
    assert.match(d.identity ?? "", /^url:http:\/\/127\.0\.0\.1:\d+\/md5\/disk\.raw "/);
    assert.deepEqual(d.expect.map((x) => [x.algo, x.from, x.value]), [["md5", "Content-MD5", sha("md5", image)]]);
    const check = new DigestCheck(d.expect);
    assert.deepEqual(await drain(await source.open(), check), image);
    check.verify("the image");
    const before = plain.seen.length;
    assert.deepEqual(await drain(await source.open({ offset: 4 * MiB + 7 })), image.subarray(4 * MiB + 7));
    assert.ok(plain.seen.slice(before).includes(`GET /md5/disk.raw bytes=${4 * MiB + 7}-`), plain.seen.slice(before).join(", "));
  });

  test("a server without HEAD: the size from a one-byte range; one that ignores Range cannot resume", async () => {
    const d = await new HttpSource({ url: `${plain.url}/nohead/disk.raw` }).describe();
    assert.equal(d.sizeBytes, image.length);
    await assert.rejects(new HttpSource({ url: `${plain.url}/norange/disk.raw` }).open({ offset: 10 }), /did not resume at byte 10/);
  });

  test("a body cut short of its Content-Length and a stalled transfer end the stream with an error, never with fewer bytes", async () => {
    await assert.rejects(drain(await new HttpSource({ url: `${plain.url}/drop/disk.raw` }).open()), new RegExp(`ended after \\d+ of ${image.length} bytes`));
    await assert.rejects(drain(await new HttpSource({ url: `${plain.url}/stall/disk.raw`, idleTimeoutMs: 500 }).open()), /stall\/disk\.raw sent nothing for 1 s/);
  });

  test("redirects are followed a few times, never from https down to http", async () => {
    assert.deepEqual(await drain(await new HttpSource({ url: `${plain.url}/hop/3/disk.raw` }).open()), image);
    await assert.rejects(new HttpSource({ url: `${plain.url}/hop/9/disk.raw`, maxRedirects: 5 }).open(), /more than 5 redirects/);
    assert.deepEqual(await drain(await new HttpSource({ url: `${secure.url}/disk.raw`, ca }).open()), image, "https with the server's CA");
    const down = `${secure.url}/to/${encodeURIComponent(`${plain.url}/disk.raw`)}`;
    await assert.rejects(new HttpSource({ url: down, ca }).open(), /from https to plain http/);
    await assert.rejects(new HttpSource({ url: `${secure.url}/disk.raw` }).open(), /127\.0\.0\.1/, "an unknown CA is refused, naming the server");
  });

  test("bad URLs are refused naming the field; credentials and queries never reach a message", async () => {
    assert.throws(() => new HttpSource({ url: "ftp://127.0.0.1/x" }), (e: unknown) => e instanceof InvalidInputError && e.field === "image");
    assert.throws(() => new HttpSource({ url: "http://user:hunter2@127.0.0.1/x", field: "url" }), (e: unknown) => e instanceof InvalidInputError && e.field === "url" && !e.message.includes("hunter2"));
    await assert.rejects(new HttpSource({ url: `${plain.url}/missing.img?X-Amz-Signature=topsecret` }).describe(), (e: unknown) => e instanceof NotFoundError && !(e as Error).message.includes("topsecret"));
    const closed = `http://127.0.0.1:${new URL(plain.url).port === "1" ? 2 : 1}/disk.raw`;
    await assert.rejects(new HttpSource({ url: closed }).describe(), /127\.0\.0\.1:\d+\/disk\.raw: ECONNREFUSED/);
  });
});

describe("compressed images", () => {
  const tools = { xz: ["xz", "-c", "-T1"], zstd: ["zstd", "-c", "-q"], bzip2: ["bzip2", "-c"] } as const;

  test("gzip, xz, zstd and bzip2 are known by their bytes, not their names, and inflate to the image", async () => {
    const raw = image.subarray(0, 2 * MiB + 4096);
    const rawPath = join(dir, "raw.bin");
    writeFileSync(rawPath, raw);
    const made: Record<string, Buffer> = { gzip: gzipSync(raw) };
    for (const [kind, [cmd, ...args]] of Object.entries(tools)) made[kind] = execFileSync(cmd, [...args, rawPath], { maxBuffer: 64 * MiB });
    for (const [kind, bytes] of Object.entries(made)) {
      // Named as if raw: the name says nothing.
      const path = join(dir, `${kind}-looks-raw.img`);
      writeFileSync(path, bytes);
      const { stream, compression } = await uncompressed(await new FileSource(path).open(), { maxBytes: 64 * MiB, what: path });
      assert.equal(compression, kind);
      assert.deepEqual(await drain(stream), raw, kind);
    }
    // Raw bytes named as if compressed stay as they are, even when they start like bzip2's
    // "BZh9" with no block after it.
    const tricky = Buffer.concat([Buffer.from("BZh9 not a block"), raw]);
    writeFileSync(join(dir, "plain.img.bz2"), tricky);
    const { stream, compression } = await uncompressed(await new FileSource(join(dir, "plain.img.bz2")).open(), { maxBytes: 64 * MiB, what: "x" });
    assert.equal(compression, undefined);
    assert.deepEqual(await drain(stream), tricky);
  });

  test("an image that inflates past the limit is stopped there; a corrupt one is an error, not a short image", async () => {
    const zeros = join(dir, "zeros.bin");
    writeFileSync(zeros, Buffer.alloc(64 * MiB));
    const bomb = join(dir, "bomb.xz");
    writeFileSync(bomb, execFileSync("xz", ["-c", "-T1", zeros], { maxBuffer: 64 * MiB }));
    const { stream } = await uncompressed(await new FileSource(bomb).open(), { maxBytes: 1 * MiB, what: "bomb.xz" });
    await assert.rejects(drain(stream), (e: unknown) => e instanceof InvalidInputError && /decompresses to more than 1048576 bytes/.test((e as Error).message));
    for (const [kind, bytes] of [["gzip", gzipSync(image)], ["xz", execFileSync("xz", ["-c", "-T1", join(dir, "www", "disk.raw")], { maxBuffer: 64 * MiB })]] as const) {
      const cut = join(dir, `cut.${kind}`);
      writeFileSync(cut, bytes.subarray(0, Math.floor(bytes.length / 2)));
      const { stream: s } = await uncompressed(await new FileSource(cut).open(), { maxBytes: 64 * MiB, what: cut });
      await assert.rejects(drain(s), new RegExp(`not valid ${kind}`), kind);
    }
  });
});
