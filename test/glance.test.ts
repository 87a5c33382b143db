// The Glance v2 client against a real Glance (Debian's glance-api, no Keystone, from
// scripts/glance): uploads checked against what was sent, downloads whole and resumed, lookups
// most recent first, JSON-patch updates, deletes, and the errors a user sees: Glance's refusals
// typed, an endpoint that is down or silent named, configuration faults naming their field.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, writeFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { Readable } from "node:stream";
import { inspect } from "node:util";
import { after, before, describe, test } from "node:test";
import type { ImageService } from "../provider/images/contract";
import { ForbiddenError, GlanceImageService, glanceImageService } from "../provider/images/glance";
import { glanceSettings } from "../provider/images/glance/config";
import { BackendError, ConflictError, InvalidInputError, NotFoundError } from "../provider/util/errors";
import { freePort } from "./helpers/daemon";
import { removeDir, tempDir } from "./helpers/env";
import { GlanceServer, glanceMissing } from "./helpers/glance";

const PROJECT = "0123456789abcdef0123456789abcdef";
/** This Glance's largest image: small, so that a refusal for size costs little to provoke. */
const SIZE_CAP = 32 << 20;
const md5 = (b: Buffer) => createHash("md5").update(b).digest("hex");
const sha512 = (b: Buffer) => createHash("sha512").update(b).digest("hex");

/** A source that hands out `data` in 64 KiB chunks as it is read (so the upload streams, chunked). */
function source(data: Buffer): Readable {
  let at = 0;
  return new Readable({
    read() {
      if (at >= data.length) return void this.push(null);
      this.push(data.subarray(at, at + 65536));
      at += 65536;
    },
  });
}

async function readAll(body: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of body as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

/** The rejection of `p`, to assert on (assert.rejects cannot look at several fields and the message at once). */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  assert.fail("expected a rejection");
}

describe("Glance v2 image service", { skip: glanceMissing() }, () => {
  let glance: GlanceServer;
  let images: ImageService;
  let endpoint: string;
  const services: ImageService[] = [];
  const service = (auth: Record<string, unknown>, extra: Record<string, unknown> = {}): ImageService => {
    const s = glanceImageService("glance", { type: "glance", endpoint, auth, ...extra });
    services.push(s);
    return s;
  };

  before(async () => {
    glance = await GlanceServer.start({ imageSizeCap: SIZE_CAP });
    endpoint = glance.endpoint;
    images = service({ type: "noauth", projectId: PROJECT, userId: "tester" });
  });
  after(() => {
    for (const s of services) s.close();
    glance?.stop();
  });

  const data = Buffer.concat([randomBytes(3 << 20), Buffer.alloc(1 << 20, 0x5a), randomBytes(12345)]);
  let id: string;

  test("create, upload (streamed) and show: Glance's size and hashes are the bytes sent", async () => {
    const created = await images.create({ name: "ubuntu-base", diskFormat: "raw", tags: ["base"], properties: { os_distro: "ubuntu", cinder_like: "x" }, minDiskGiB: 1 });
    id = created.id;
    assert.equal(created.status, "queued");
    assert.equal(created.sizeBytes, undefined);
    assert.equal(created.owner, PROJECT);
    assert.deepEqual(created.properties, { os_distro: "ubuntu", cinder_like: "x" });

    const sent = await images.upload(id, source(data), { sizeBytes: data.length });
    assert.equal(sent.sentBytes, data.length);
    assert.equal(sent.md5, md5(data));
    assert.equal(sent.hash.value, sha512(data));

    const shown = await images.show(id);
    assert.equal(shown.status, "active");
    assert.equal(shown.sizeBytes, data.length);
    assert.equal(shown.checksum, md5(data));
    assert.deepEqual(shown.hash, { algo: "sha512", value: sha512(data) });
    assert.equal(shown.diskFormat, "raw");
    assert.equal(shown.containerFormat, "bare");
    assert.equal(shown.minDiskGiB, 1);
    assert.deepEqual(shown.tags, ["base"]);
    assert.equal(shown.visibility, "shared");
    assert.equal(shown.protected, false);
    // The file store keeps the bytes in a file named by the id, and Glance shows where.
    assert.equal(shown.directUrl, `file://${join(glance.imagesDir, id)}`);
    assert.ok(existsSync(join(glance.imagesDir, id)));
    assert.deepEqual((await images.locations(id))?.map((l) => l.url), [shown.directUrl]);
  });

  test("download: the whole image, and resumed from an offset, byte for byte", async () => {
    const whole = await images.download(id);
    assert.equal(whole.offset, 0);
    assert.equal(whole.totalBytes, data.length);
    assert.equal(whole.contentMd5, md5(data));
    const got = await readAll(whole.body);
    assert.equal(md5(got), md5(data));
    assert.ok(got.equals(data));

    const offset = (3 << 20) + 777;
    const rest = await images.download(id, { offset });
    assert.equal(rest.offset, offset);
    assert.equal(rest.length, data.length - offset);
    assert.equal(rest.totalBytes, data.length);
    const tail = await readAll(rest.body);
    assert.ok(tail.equals(data.subarray(offset)));
    // What a resumed download puts together is the image.
    assert.equal(sha512(Buffer.concat([data.subarray(0, offset), tail])), sha512(data));

    const past = await rejection(images.download(id, { offset: data.length }));
    assert.ok(past instanceof InvalidInputError, String(past));
    assert.equal(past.field, "offset");
  });

  test("an image takes data once; an image with no data has nothing to download", async () => {
    const again = await rejection(images.upload(id, source(Buffer.from("other bytes"))));
    assert.ok(again instanceof ConflictError, String(again));
    assert.match(again.message, /PUT \/v2\/images\/[0-9a-f-]+\/file on http:\/\/127\.0\.0\.1:\d+ answered 409/);
    // The image still holds the first upload.
    assert.equal((await images.show(id)).checksum, md5(data));

    const empty = await images.create({ name: "no-data-yet", diskFormat: "qcow2" });
    const none = await rejection(images.download(empty.id));
    assert.ok(none instanceof ConflictError, String(none));
    assert.match(none.message, /has no data yet/);
  });

  test("an upload that is not what was meant is refused: a short source, an empty one, a failing one", async () => {
    const short = await images.create({ name: "short", diskFormat: "raw" });
    const cut = await rejection(images.upload(short.id, source(data.subarray(0, 1000)), { sizeBytes: 5000 }));
    assert.ok(cut instanceof BackendError, String(cut));
    assert.match(cut.message, /1000 bytes were sent, 5000 were expected/);

    // Glance makes an active, empty image of an empty chunked body.
    const hollow = await images.create({ name: "hollow", diskFormat: "raw" });
    const empty = await rejection(images.upload(hollow.id, source(Buffer.alloc(0))));
    assert.match(empty.message, /no bytes were sent/);

    const broken = await images.create({ name: "broken-source", diskFormat: "raw" });
    let handed = 0;
    const failing = new Readable({
      read() {
        if (handed++ < 8) this.push(randomBytes(65536));
        else this.destroy(new Error("the source disk went away"));
      },
    });
    const failed = await rejection(images.upload(broken.id, failing));
    assert.match(failed.message, /the source disk went away/);
    // Glance dropped the partial upload: the image is still empty and can take its data.
    assert.ok(failed instanceof BackendError, String(failed));
    assert.match(failed.message, /the upload of Glance image "[0-9a-f-]+" to http:\/\/127\.0\.0\.1:\d+ stopped after \d+ bytes/);
    const after = await images.show(broken.id);
    assert.equal(after.status, "queued");
    assert.equal(after.sizeBytes, undefined);
    const retried = await images.upload(broken.id, source(data.subarray(0, 4096)), { sizeBytes: 4096 });
    assert.equal(retried.image.status, "active");
    assert.equal(retried.image.checksum, md5(data.subarray(0, 4096)));
  });

  test("an image over Glance's size cap is refused, naming the size", async () => {
    const big = await images.create({ name: "too-big", diskFormat: "raw" });
    const size = SIZE_CAP + (1 << 20);
    const chunk = Buffer.alloc(1 << 20, 1);
    let given = 0;
    const endless = new Readable({
      read() {
        this.push(given < size ? chunk : null);
        given += chunk.length;
      },
    });
    const err = await rejection(images.upload(big.id, endless, { sizeBytes: size }));
    assert.ok(err instanceof InvalidInputError, String(err));
    assert.equal(err.field, "sizeBytes");
    assert.match(err.message, new RegExp(`${size} bytes are more than the Glance at ${endpoint.replace(/\./g, "\\.")} accepts`));
    assert.notEqual((await images.show(big.id)).status, "active");
  });

  test("a reader slower than the idle timeout is not a silent server: the download completes", async () => {
    const patient = service({ type: "noauth", projectId: PROJECT, userId: "tester" }, { timeoutSeconds: 1 });
    const download = await patient.download(id);
    const chunks: Buffer[] = [];
    let paused = false;
    for await (const c of download.body as AsyncIterable<Buffer>) {
      chunks.push(c);
      // Long enough for the socket to sit idle past the timeout while this reader holds it up.
      if (!paused) await new Promise((resolve) => setTimeout(resolve, 2500));
      paused = true;
    }
    assert.ok(Buffer.concat(chunks).equals(data));
  });

  test("find: by name and by tags, most recent first; by properties", async () => {
    const older = await images.create({ name: "golden", diskFormat: "raw", tags: ["web", "v1"], properties: { role: "web" } });
    const newer = await images.create({ name: "golden", diskFormat: "raw", tags: ["web", "v2"], properties: { role: "db" } });
    await images.create({ name: "golden-other", diskFormat: "raw", tags: ["v2"] });

    assert.deepEqual((await images.find({ name: "golden" })).map((i) => i.id), [newer.id, older.id]);
    assert.deepEqual((await images.find({ name: "golden", limit: 1 })).map((i) => i.id), [newer.id]);
    assert.deepEqual((await images.find({ tags: ["web"] })).map((i) => i.id), [newer.id, older.id]);
    assert.deepEqual((await images.find({ tags: ["web", "v1"] })).map((i) => i.id), [older.id]);
    assert.deepEqual((await images.find({ name: "golden", properties: { role: "db" } })).map((i) => i.id), [newer.id]);
    assert.deepEqual(await images.find({ name: "no-such-image" }), []);
    // Paged, two a page: four images fill the last page, which still has a `next` (to an empty page).
    const many: string[] = [];
    for (let i = 0; i < 4; i++) many.push((await images.create({ name: "paged", diskFormat: "raw" })).id);
    const small = new GlanceImageService("glance", glanceSettings({ type: "glance", endpoint, auth: { type: "noauth", projectId: PROJECT, userId: "tester" } }), { pageSize: 2 });
    services.push(small);
    assert.deepEqual((await small.find({ name: "paged" })).map((i) => i.id), [...many].reverse());
    assert.deepEqual((await small.find({ name: "paged", limit: 3 })).map((i) => i.id), [...many].reverse().slice(0, 3));
  });

  test("update: name, properties set and removed, tags, protection, as one JSON patch", async () => {
    const image = await images.create({ name: "to-edit", diskFormat: "raw", tags: ["a"], properties: { keep: "1", drop: "2", change: "old" } });
    const updated = await images.update(image.id, {
      set: { name: "edited", minDiskGiB: 4, properties: { change: "new", added: "yes", "hw/odd~name": "ok" } },
      remove: ["drop", "never-there"],
      tags: ["b", "c"],
    });
    assert.equal(updated.name, "edited");
    assert.equal(updated.minDiskGiB, 4);
    assert.deepEqual(updated.properties, { keep: "1", change: "new", added: "yes", "hw/odd~name": "ok" });
    assert.deepEqual([...updated.tags].sort(), ["b", "c"]);
    const shown = await images.show(image.id);
    assert.equal(shown.name, "edited");
    assert.deepEqual(shown.properties, updated.properties);

    const reserved = await rejection(images.update(image.id, { set: { properties: { size: "1" } } }));
    assert.ok(reserved instanceof InvalidInputError, String(reserved));
    assert.equal(reserved.field, "set.properties.size");
    const reservedAtCreate = await rejection(images.create({ name: "x", diskFormat: "raw", properties: { os_hash_value: "forged" } }));
    assert.ok(reservedAtCreate instanceof InvalidInputError);
    assert.equal(reservedAtCreate.field, "properties.os_hash_value");
  });

  test("delete: gone afterwards, a missing image is deleted already, a protected one is refused clearly", async () => {
    const image = await images.create({ name: "to-delete", diskFormat: "raw" });
    await images.upload(image.id, source(data.subarray(0, 8192)));
    await images.delete(image.id);
    const gone = await rejection(images.show(image.id));
    assert.ok(gone instanceof NotFoundError, String(gone));
    assert.match(gone.message, new RegExp(`not on the Glance at ${endpoint.replace(/\./g, "\\.")}`));
    assert.equal(existsSync(join(glance.imagesDir, image.id)), false);
    await images.delete(image.id);
    await images.delete("00000000-0000-4000-8000-000000000000");

    const keep = await images.create({ name: "precious", diskFormat: "raw", protected: true });
    const refused = await rejection(images.delete(keep.id));
    assert.ok(refused instanceof ConflictError, String(refused));
    assert.match(refused.message, /is protected and cannot be deleted; set protected to false first/);
    assert.equal((await images.show(keep.id)).protected, true);
    await images.update(keep.id, { set: { protected: false } });
    await images.delete(keep.id);
    assert.ok((await rejection(images.show(keep.id))) instanceof NotFoundError);
  });

  test("policy: a member may not publish an image, an admin may; another project sees the public image, not a private one", async () => {
    const refused = await rejection(images.create({ name: "for-all", diskFormat: "raw", visibility: "public" }));
    assert.ok(refused instanceof ForbiddenError, String(refused));
    assert.match(refused.message, /POST \/v2\/images on http:\/\/127\.0\.0\.1:\d+ answered 403/);

    const admin = service({ type: "noauth", projectId: PROJECT, userId: "root", roles: ["admin", "member", "reader"] });
    const published = await admin.create({ name: "for-all", diskFormat: "raw", visibility: "public" });
    assert.equal(published.visibility, "public");

    const other = service({ type: "noauth", projectId: "another-project", userId: "someone" });
    const mine = await images.create({ name: "mine", diskFormat: "raw", visibility: "private" });
    assert.ok((await rejection(other.show(mine.id))) instanceof NotFoundError);
    assert.deepEqual((await other.find({ name: "for-all" })).map((i) => i.id), [published.id]);
  });

  test("capabilities: the API version and the import methods this Glance offers", async () => {
    const caps = await images.capabilities();
    assert.match(caps.apiVersion, /^2\.\d+$/);
    assert.ok(Number(caps.apiVersion.split(".")[1]) >= 9, caps.apiVersion);
    assert.ok(caps.importMethods.includes("glance-direct"), caps.importMethods.join(","));
    // One store (no multi-store): no named stores, locations on the image record.
    assert.deepEqual(caps.stores, []);
    assert.equal(caps.locations, "record");
  });

  test("a token Glance refuses: a clear error that never shows the token", async () => {
    const dir = tempDir("kindling-glance-token-");
    try {
      const secret = "gAAAAAB-not-a-real-token-0123456789";
      writeFileSync(join(dir, "token"), `${secret}\n`, { mode: 0o600 });
      for (const s of [service({ type: "token", token: secret }), service({ type: "token", tokenFile: join(dir, "token") })]) {
        const err = await rejection(s.find({ name: "anything" }));
        assert.ok(err instanceof ForbiddenError, String(err));
        assert.match(err.message, /answered 401/);
        assert.ok(!err.message.includes(secret) && !JSON.stringify(err).includes(secret));
        // Nor does a logged client.
        assert.ok(!inspect(s, { depth: 10, showHidden: true }).includes(secret));
        assert.ok(!JSON.stringify(s).includes(secret));
      }
    } finally {
      removeDir(dir);
    }
  });

  test("an endpoint that never answers, and a port nobody listens on: errors naming the endpoint", async () => {
    // A server that takes connections and says nothing: a hung Glance, or a black-holed address.
    const sockets: Socket[] = [];
    const silent: Server = createServer((s) => sockets.push(s));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    try {
      const silentEndpoint = `http://127.0.0.1:${(silent.address() as { port: number }).port}`;
      const hung = glanceImageService("glance", { type: "glance", endpoint: silentEndpoint, auth: { type: "noauth", projectId: PROJECT, userId: "u" }, timeoutSeconds: 1 });
      services.push(hung);
      const err = await rejection(hung.show("00000000-0000-4000-8000-000000000000"));
      assert.ok(err instanceof BackendError, String(err));
      assert.match(err.message, new RegExp(`GET /v2/images/[0-9a-f-]+ on ${silentEndpoint} got no answer in 3 attempts: no byte moved for 1 s`));
      assert.match(err.message, /check that Glance is up and reachable/);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }

    const closedEndpoint = `http://127.0.0.1:${await freePort()}`;
    const nobody = glanceImageService("glance", { type: "glance", endpoint: closedEndpoint, auth: { type: "noauth", projectId: PROJECT, userId: "u" }, timeoutSeconds: 2 });
    services.push(nobody);
    const refused = await rejection(nobody.find({ name: "x" }));
    assert.ok(refused instanceof BackendError, String(refused));
    assert.match(refused.message, new RegExp(`GET /v2/images on ${closedEndpoint} got no answer in 3 attempts: .*ECONNREFUSED`));
  });

  test("configuration faults name the field at fault", (t) => {
    const ok = { type: "glance", endpoint: "http://127.0.0.1:9292", auth: { type: "noauth", projectId: PROJECT, userId: "u" } };
    const fault = (config: unknown, prefix?: string): InvalidInputError => {
      try {
        glanceImageService("glance", config, prefix).close();
      } catch (err) {
        assert.ok(err instanceof InvalidInputError, String(err));
        return err;
      }
      assert.fail("expected the configuration to be refused");
    };
    assert.equal(fault({ ...ok, endpoint: "ftp://127.0.0.1" }).field, "imageServices.glance.endpoint");
    assert.equal(fault({ ...ok, endpoint: "http://user:pw@127.0.0.1:9292" }).field, "imageServices.glance.endpoint");
    assert.equal(fault({ ...ok, auth: { type: "noauth", userId: "u" } }).field, "imageServices.glance.auth.projectId");
    assert.equal(fault({ ...ok, auth: { type: "noauth", projectId: "a b", userId: "u" } }).field, "imageServices.glance.auth.projectId");
    assert.equal(fault({ ...ok, auth: { type: "keystone" } }).field, "imageServices.glance.auth.type");
    assert.equal(fault({ ...ok, auth: { type: "token", token: "t", tokenFile: "/x" } }).field, "imageServices.glance.auth.token");
    assert.equal(fault({ ...ok, auth: { type: "token" } }).field, "imageServices.glance.auth.token");
    assert.equal(fault({ ...ok, timeoutSeconds: 0 }).field, "imageServices.glance.timeoutSeconds");
    assert.equal(fault({ ...ok, endpiont: "x" }).field, "imageServices.glance.endpiont");
    assert.equal(fault({ ...ok, endpiont: "x" }).rule, "unknown field");
    const dir = tempDir("kindling-glance-cfg-");
    t.after(() => removeDir(dir));
    const missingFile = join(dir, "none");
    const unreadable = fault({ ...ok, auth: { type: "token", tokenFile: missingFile } }, "imageServices.images");
    assert.equal(unreadable.field, "imageServices.images.auth.tokenFile");
    assert.match(unreadable.message, /cannot be read \(ENOENT\)/);
    assert.equal(fault({ ...ok, ca: missingFile }).field, "imageServices.glance.ca");
    // A secret given inline never comes back in the error about it.
    const secret = "s3cr3t with spaces";
    const bad = fault({ ...ok, auth: { type: "token", token: secret } });
    assert.equal(bad.field, "imageServices.glance.auth.token");
    assert.ok(!bad.message.includes(secret));
  });
});
