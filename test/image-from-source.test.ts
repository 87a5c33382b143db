// Images made from a local file or a URL (copySourceToImage) in a real Glance, with images
// built here by real qemu-img: raw goes up streamed, anything else is staged and checked first;
// every digest is checked, a declared format that is not the content's is refused naming the
// option, a hostile image is refused naming the check, and a refusal leaves no image in Glance
// and nothing in the staging directory.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { after, before, describe, test } from "node:test";
import type { ImageService } from "../provider/images/contract";
import { glanceImageService, type GlanceImageService } from "../provider/images/glance";
import { hexDigest } from "../provider/images/digest";
import { UnsafeImageError } from "../provider/images/inspect";
import { FileSource } from "../provider/images/sources/file";
import { HttpSource } from "../provider/images/sources/http";
import { copySourceToImage } from "../provider/library/images";
import { removeDir, tempDir } from "./helpers/env";
import { GlanceServer, glanceMissing } from "./helpers/glance";
import { startImageServer, type ImageServer } from "./helpers/image-http";

const PROJECT = "0123456789abcdef0123456789abcdef";
const MiB = 1 << 20;
const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");
const md5 = (data: Buffer) => createHash("md5").update(data).digest("hex");

async function downloaded(service: ImageService, id: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of (await service.download(id)).body) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

describe("images from a file or a URL", { skip: glanceMissing() }, () => {
  let glance: GlanceServer;
  let client: GlanceImageService;
  let http: ImageServer;
  let dir: string;
  let files: string;
  let staging: string;
  let raw: Buffer;
  let qcow2: Buffer;

  before(async () => {
    glance = await GlanceServer.start();
    client = glanceImageService("glance", { type: "glance", endpoint: glance.endpoint, auth: { type: "noauth", projectId: PROJECT, userId: "source-user" } });
    dir = tempDir("kindling-image-source-");
    files = join(dir, "files");
    staging = join(dir, "staging");
    mkdirSync(files);
    mkdirSync(staging);
    // A raw disk of 3 MiB: data, a hole, data (not a multiple of the read chunk at the end).
    raw = Buffer.concat([randomBytes(MiB), Buffer.alloc(MiB), randomBytes(MiB - 512)]);
    writeFileSync(join(files, "disk.raw"), raw);
    execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", join(files, "disk.raw"), join(files, "disk.qcow2")]);
    qcow2 = readFileSync(join(files, "disk.qcow2"));
    writeFileSync(join(files, "disk.qcow2.gz"), gzipSync(qcow2));
    // Hostile: a qcow2 whose backing file is a host file (its bytes would show through).
    writeFileSync(join(files, "secret"), "host secret\n");
    execFileSync("qemu-img", ["create", "-f", "qcow2", "-b", join(files, "secret"), "-F", "raw", join(files, "backed.qcow2"), "1M"]);
    http = await startImageServer(files);
  });

  after(async () => {
    await http?.close();
    client?.close();
    glance?.stop();
    if (dir) removeDir(dir);
  });

  const digest = (data: Buffer, from = "--sha256") => [hexDigest("sha256", sha256(data), from, "sha256")];
  const images = async () => (await client.find({})).map((i) => `${i.name}:${i.status}`);
  const cleanUp = async () => {
    for (const i of await client.find({})) await client.delete(i.id);
  };

  test("a raw file with its sha256 is uploaded streamed (no staging: a staging dir that cannot exist is never asked for), as raw, byte for byte", async () => {
    let last = { done: 0, total: 0 };
    const nowhere = join(files, "disk.raw", "cannot-be-a-directory");
    const made = await copySourceToImage(new FileSource(join(files, "disk.raw"), digest(raw)), client, { name: "from-file", stagingDir: nowhere, properties: { purpose: "test", os_glance_x: "1" } }, (p) => (last = p));
    assert.equal(made.image.status, "active");
    assert.equal(made.image.diskFormat, "raw");
    assert.equal(made.image.containerFormat, "bare");
    assert.equal(made.image.sizeBytes, raw.length);
    assert.equal(made.image.checksum, md5(raw));
    assert.equal(made.image.minDiskGiB, 1);
    assert.equal(made.image.properties.purpose, "test");
    assert.equal(made.image.properties.os_glance_x, undefined, "a name Glance reserves is not sent");
    assert.deepEqual(await downloaded(client, made.image.id), raw);
    assert.deepEqual(last, { done: raw.length, total: raw.length }, "progress reached the end");
    await cleanUp();
  });

  test("a qcow2 at a URL with its sha256 is staged, checked and uploaded as qcow2; the staging directory is left empty", async () => {
    const made = await copySourceToImage(new HttpSource({ url: `${http.url}/disk.qcow2`, expect: digest(qcow2) }), client, { name: "from-url", stagingDir: staging });
    assert.equal(made.image.diskFormat, "qcow2");
    assert.equal(made.image.checksum, md5(qcow2));
    assert.deepEqual(await downloaded(client, made.image.id), qcow2);
    assert.deepEqual(readdirSync(staging), []);
    await cleanUp();
  });

  test("a gzip-compressed qcow2 is inflated and uploaded as the qcow2 inside; its digest is the compressed file's", async () => {
    const gz = readFileSync(join(files, "disk.qcow2.gz"));
    const made = await copySourceToImage(new FileSource(join(files, "disk.qcow2.gz"), digest(gz)), client, { name: "from-gzip", stagingDir: staging });
    assert.equal(made.image.diskFormat, "qcow2");
    assert.equal(made.image.checksum, md5(qcow2));
    await cleanUp();
  });

  test("a wrong digest is refused and leaves no image, streamed (raw) or staged (qcow2)", async () => {
    const wrong = [hexDigest("sha256", sha256(Buffer.from("other bytes")), "--sha256", "sha256")];
    await assert.rejects(copySourceToImage(new FileSource(join(files, "disk.raw"), wrong), client, { name: "wrong-raw" }), /its sha256 is [0-9a-f]{64}, but --sha256 says/);
    assert.deepEqual(await images(), [], "the half-made raw image was deleted");
    await assert.rejects(copySourceToImage(new HttpSource({ url: `${http.url}/disk.qcow2`, expect: wrong }), client, { name: "wrong-qcow2", stagingDir: staging }), /its sha256 is [0-9a-f]{64}, but --sha256 says/);
    assert.deepEqual(await images(), []);
    assert.deepEqual(readdirSync(staging), []);
  });

  test("a source nobody vouches for is refused unless allowed", async () => {
    await assert.rejects(copySourceToImage(new FileSource(join(files, "disk.raw")), client, { name: "unverified" }), /offers no digest to check its bytes against/);
    assert.deepEqual(await images(), []);
    const made = await copySourceToImage(new FileSource(join(files, "disk.raw")), client, { name: "unverified", allowUnverified: true });
    assert.equal(made.image.checksum, md5(raw));
    await cleanUp();
  });

  test("a qcow2 with a host file as its backing file is refused naming the check, and nothing reaches Glance", async () => {
    const backed = readFileSync(join(files, "backed.qcow2"));
    await assert.rejects(copySourceToImage(new FileSource(join(files, "backed.qcow2"), digest(backed)), client, { name: "hostile", stagingDir: staging }), (err: unknown) => {
      assert.ok(err instanceof UnsafeImageError, String(err));
      assert.ok(err.checks.includes("qcow2.backing_file"), err.message);
      assert.match(err.message, /refused by check qcow2\.backing_file/);
      return true;
    });
    assert.deepEqual(await images(), [], "no image was even created");
    assert.deepEqual(readdirSync(staging), []);
  });

  test("a declared disk format that is not the content's is refused naming diskFormat, before any image is made", async () => {
    await assert.rejects(copySourceToImage(new FileSource(join(files, "disk.qcow2"), digest(qcow2)), client, { name: "claims-raw", diskFormat: "raw", stagingDir: staging }), /diskFormat: .*declared raw, but the content is qcow2/);
    await assert.rejects(copySourceToImage(new FileSource(join(files, "disk.raw"), digest(raw)), client, { name: "claims-vmdk", diskFormat: "vmdk" }), /diskFormat: .*declared vmdk, but the content is raw/);
    assert.deepEqual(await images(), []);
    assert.deepEqual(readdirSync(staging), []);
    // The right claim is taken.
    const made = await copySourceToImage(new FileSource(join(files, "disk.qcow2"), digest(qcow2)), client, { name: "claims-qcow2", diskFormat: "qcow2", stagingDir: staging });
    assert.equal(made.image.diskFormat, "qcow2");
    await cleanUp();
  });
});
