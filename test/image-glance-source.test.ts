// A Glance image as a source of bytes, against a real Glance (scripts/glance): every digest
// Glance vouches for is checked beside the user's, a download resumes from an offset, and an
// image without data or with digests that disagree is refused before a byte moves.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { after, before, describe, test } from "node:test";
import { DigestCheck, hexDigest, IntegrityError } from "../provider/images/digest";
import { glanceImageService, type GlanceImageService } from "../provider/images/glance";
import { GlanceSource } from "../provider/images/sources/glance";
import type { ImageRecord } from "../provider/images/contract";
import { ConflictError, InvalidInputError } from "../provider/util/errors";
import { GlanceServer, glanceMissing } from "./helpers/glance";

const hash = (algo: string, b: Buffer) => createHash(algo).update(b).digest("hex");

async function drain(stream: Readable, check?: DigestCheck): Promise<Buffer> {
  const parts: Buffer[] = [];
  const sink = new Writable({ write: (c: Buffer, _e, done) => void (parts.push(c), done()) });
  await (check ? pipeline(stream, check, sink) : pipeline(stream, sink));
  return Buffer.concat(parts);
}

describe("a Glance image as a source", { skip: glanceMissing() }, () => {
  let glance: GlanceServer;
  let service: GlanceImageService;
  let image: ImageRecord;
  const data = Buffer.concat([randomBytes(3 << 20), Buffer.alloc(1 << 20), randomBytes(12345)]);

  before(async () => {
    glance = await GlanceServer.start();
    service = glanceImageService("glance", { type: "glance", endpoint: glance.endpoint, auth: { type: "noauth", projectId: "0011223344556677", userId: "u" } });
    image = (await service.create({ name: "src", diskFormat: "raw", minDiskGiB: 2 })) as ImageRecord;
    await service.upload(image.id, Readable.from([data]));
  });

  after(() => {
    service?.close();
    glance?.stop();
  });

  test("Glance's sha512 and md5 are checked, the strongest names the bytes, and a download resumes", async () => {
    const source = new GlanceSource(service, image);
    const d = await source.describe();
    assert.deepEqual(d.expect.map((x) => [x.algo, x.value]), [["sha512", hash("sha512", data)], ["md5", hash("md5", data)]]);
    assert.equal(d.identity, `sha512:${hash("sha512", data)}`);
    assert.equal(d.sizeBytes, data.length);
    assert.equal(d.declaredFormat, "raw");
    assert.equal(d.minDiskGiB, 2);
    const check = new DigestCheck(d.expect);
    assert.deepEqual(await drain(await source.open(), check), data);
    check.verify("the image");
    assert.deepEqual(await drain(await source.open({ offset: 3 << 20 })), data.subarray(3 << 20));
  });

  test("the user's digest is checked too; one that Glance's contradicts is refused before any byte moves", async () => {
    const wrong = hexDigest("sha256", hash("sha256", Buffer.from("other bytes")), "--sha256", "sha256");
    const source = new GlanceSource(service, image, [wrong]);
    const check = new DigestCheck((await source.describe()).expect);
    await drain(await source.open(), check);
    assert.throws(() => check.verify("the image"), (e: unknown) => e instanceof IntegrityError && /--sha256 says/.test((e as Error).message));
    const md5 = hexDigest("md5", hash("md5", Buffer.from("other bytes")), "--md5", "md5");
    await assert.rejects(new GlanceSource(service, image, [md5]).describe(), (e: unknown) => e instanceof ConflictError && /glance's checksum says/.test((e as Error).message));
  });

  test("an image with no data yet is refused, naming it and its status", async () => {
    const queued = await service.create({ name: "empty", diskFormat: "qcow2" });
    try {
      await assert.rejects(new GlanceSource(service, queued).describe(), (e: unknown) => e instanceof InvalidInputError && e.field === "image" && new RegExp(`image empty \\(${queued.id}\\) of glance is queued, not active`).test((e as Error).message));
    } finally {
      await service.delete(queued.id);
    }
  });
});
