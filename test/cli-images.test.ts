// `kindling image list | show | delete` against a real Glance (scripts/glance), configured
// under imageServices beside a file backend: names pick the newest image, a delete by a name
// two images carry is refused, and configuration faults name their field.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import type { ImageRecord } from "../provider/images/contract";
import { glanceImageService, type GlanceImageService } from "../provider/images/glance";
import { loadConfig, openBackends } from "../provider/library";
import { kindling, kindlingAsync, ok } from "./helpers/cli";
import { removeDir, tempDir } from "./helpers/env";
import { GlanceServer, glanceMissing } from "./helpers/glance";
import { startImageServer } from "./helpers/image-http";

const PROJECT = "fedcba9876543210fedcba9876543210";
const missing = glanceMissing();

describe("kindling image", { skip: missing }, () => {
  let glance: GlanceServer;
  let client: GlanceImageService;
  let dir: string;
  let config: string;
  const images: ImageRecord[] = [];

  const writeConfig = (name: string, imageServices: unknown) => {
    const path = join(dir, name);
    writeFileSync(path, JSON.stringify({ backends: { local: { driver: "file", path: join(dir, "volumes") } }, imageServices }));
    return path;
  };
  const glanceEntry = () => ({ type: "glance", endpoint: glance.endpoint, auth: { type: "noauth", projectId: PROJECT, userId: "cli-user" } });
  const run = (args: string[], file = config) => kindling(["--config", file, ...args], { env: { XDG_DATA_HOME: join(dir, "data") } });

  before(async () => {
    glance = await GlanceServer.start();
    dir = tempDir("kindling-cli-images-");
    config = writeConfig("kindling.json", { glance: glanceEntry() });
    client = glanceImageService("glance", glanceEntry());
    for (const [name, data] of [["golden", "old golden bytes"], ["other", "other bytes"], ["golden", "new golden bytes"]] as const) {
      const image = await client.create({ name, diskFormat: "raw" });
      await client.upload(image.id, Readable.from([Buffer.from(data)]));
      images.push(image);
      // Glance orders by creation time with second resolution.
      await new Promise((r) => setTimeout(r, 1100));
    }
  });

  after(() => {
    client?.close();
    glance?.stop();
    if (dir) removeDir(dir);
  });

  test("list shows every image of the service; show takes a name (the newest) or SERVICE:ID", () => {
    const listed = ok(run(["--json", "image", "list"])).json<ImageRecord[]>();
    assert.deepEqual(new Set(listed.map((i) => i.id)), new Set(images.map((i) => i.id)));
    assert.ok(listed.every((i) => i.status === "active" && i.sizeBytes !== undefined));
    const text = ok(run(["image", "list"])).stdout;
    assert.match(text, /NAME\s+ID\s+STATUS/);
    for (const i of images) assert.ok(text.includes(i.id), text);
    assert.equal(ok(run(["--json", "image", "show", "golden"])).json<ImageRecord>().id, images[2].id, "a name picks the newest image of that name");
    const older = ok(run(["--json", "image", "show", `glance:${images[0].id}`])).json<ImageRecord & { service: string }>();
    assert.equal(older.id, images[0].id);
    assert.equal(older.service, "glance");
    assert.equal(older.sizeBytes, "old golden bytes".length);
    const nothing = run(["image", "show", "no-such-image"]);
    assert.equal(nothing.code, 3, nothing.stderr);
    assert.match(nothing.stderr, /image "no-such-image" not found/);
  });

  test("delete by a name two images carry is refused, naming both; by id it deletes that one only", async () => {
    const twice = run(["image", "delete", "golden"]);
    assert.equal(twice.code, 4, twice.stderr);
    assert.ok(twice.stderr.includes(images[0].id) && twice.stderr.includes(images[2].id), twice.stderr);
    assert.equal((await client.show(images[0].id)).status, "active", "nothing was deleted");
    ok(run(["image", "delete", `glance:${images[0].id}`]));
    await assert.rejects(client.show(images[0].id), /not found/);
    assert.equal((await client.show(images[2].id)).status, "active");
    // Now the name is one image's.
    assert.match(ok(run(["image", "delete", "golden"])).stdout, new RegExp(`deleted image golden \\(${images[2].id}\\)`));
    assert.deepEqual((await client.find({})).map((i) => i.id), [images[1].id]);
  });

  test("configuration faults name their field, and a token never reaches the output", () => {
    const cases: Array<[unknown, RegExp, string]> = [
      [{ glance: { ...glanceEntry(), type: "s3" } }, /imageServices\.glance\.type: must be "glance"/, "type"],
      [{ file: glanceEntry() }, /imageServices\.file: "file" is how image references begin/, "reserved name"],
      [{ glance: { type: "glance", endpoint: glance.endpoint } }, /imageServices\.glance\.auth/, "no auth"],
      [{ glance: { ...glanceEntry(), endpoint: "ftp://127.0.0.1" } }, /imageServices\.glance\.endpoint/, "endpoint"],
      [{ glance: { ...glanceEntry(), auth: { type: "token", tokenFile: "no-such-token.txt" } } }, /imageServices\.glance\.auth\.tokenFile: cannot be read \(ENOENT\)/, "token file, relative to the config"],
    ];
    for (const [services, message, what] of cases) {
      const r = run(["image", "list"], writeConfig(`bad-${what.replace(/\W+/g, "-")}.json`, services));
      assert.equal(r.code, 2, `${what}: ${r.stderr}`);
      assert.match(r.stderr, message, what);
    }
    const other = run(["image", "list", "--service", "elsewhere"]);
    assert.equal(other.code, 2);
    assert.match(other.stderr, /--service: no image service named "elsewhere"; configured: glance/);
    writeFileSync(join(dir, "token.txt"), "tok-never-shown-7361\n");
    const withToken = run(["--json", "image", "show", "nothing-here"], writeConfig("token.json", { glance: { ...glanceEntry(), auth: { type: "token", tokenFile: "token.txt" } } }));
    assert.notEqual(withToken.code, 0);
    assert.ok(!(withToken.stdout + withToken.stderr).includes("tok-never-shown-7361"), withToken.stderr);
    // Backends work without any image service; image commands then say what to add.
    const none = run(["image", "list"], writeConfig("none.json", undefined));
    assert.equal(none.code, 2);
    assert.match(none.stderr, /names no image service.*imageServices/);
  });

  test("image create: a raw image of a volume (through a snapshot it then deletes) or of a snapshot, byte for byte, carrying the metadata Glance allows", async () => {
    const GiB = 1024 ** 3;
    const a = randomBytes(1 << 20);
    const b = randomBytes(1 << 20);
    ok(run(["volume", "create", "imaged", "--size", "1", "--meta", "purpose=golden", "--meta", "os_glance_x=1"]));
    const set = await openBackends(loadConfig({ path: config }));
    try {
      const volume = await set.get().getVolume("imaged");
      const device = await volume.open();
      await device.pwrite(a, 0);
      await device.pwrite(b, 600 << 20);
      await device.flush();
      await device.close();
    } finally {
      await set.close();
    }
    // What the image must hold: the data where it was written, zeroes everywhere else.
    const md5Of = (parts: Array<[number, Buffer]>) => {
      const h = createHash("md5");
      const zero = Buffer.alloc(1 << 20);
      for (let at = 0; at < GiB; at += 1 << 20) h.update(parts.find(([o]) => o === at)?.[1] ?? zero);
      return h.digest("hex");
    };
    const made = ok(run(["--json", "image", "create", "golden-v1", "--from-volume", "imaged", "--meta", "release=1"])).json<ImageRecord & { sentBytes: number; md5: string }>();
    assert.equal(made.status, "active");
    assert.equal(made.sentBytes, GiB);
    assert.equal(made.sizeBytes, GiB);
    assert.equal(made.diskFormat, "raw");
    assert.equal(made.minDiskGiB, 1);
    assert.equal(made.checksum, md5Of([[0, a], [600 << 20, b]]), "Glance holds the volume's bytes");
    const shown = await client.show(made.id);
    assert.equal(shown.properties.purpose, "golden");
    assert.equal(shown.properties.release, "1");
    assert.match(shown.properties.kindling_volume_id ?? "", /^[0-9a-f-]{36}$/);
    assert.equal(shown.properties.os_glance_x, undefined, "a name Glance reserves is not carried over");
    assert.deepEqual(ok(run(["--json", "snapshot", "list"])).json(), [], "the temporary snapshot is gone");

    ok(run(["snapshot", "create", "imaged", "before-c"]));
    const set2 = await openBackends(loadConfig({ path: config }));
    try {
      const device = await (await set2.get().getVolume("imaged")).open();
      await device.pwrite(randomBytes(1 << 20), 0);
      await device.close();
    } finally {
      await set2.close();
    }
    const fromSnap = ok(run(["--json", "image", "create", "golden-v0", "--from-snapshot", "before-c"])).json<ImageRecord>();
    assert.equal(fromSnap.checksum, md5Of([[0, a], [600 << 20, b]]), "the snapshot's bytes, not the volume's newer ones");
    assert.match((await client.show(fromSnap.id)).properties.kindling_snapshot_id ?? "", /^[0-9a-f-]{36}$/);
    for (const id of [made.id, fromSnap.id]) await client.delete(id);

    const neither = run(["image", "create", "x"]);
    assert.equal(neither.code, 2);
    assert.match(neither.stderr, /exactly one of --from-volume VOL, --from-snapshot SNAP, --file PATH or --url URL/);

    // A service that refuses the upload (too large for it): no image is left, nor the temporary snapshot.
    const small = await GlanceServer.start({ imageSizeCap: 64 << 20 });
    try {
      const capped = writeConfig("capped.json", { glance: { ...glanceEntry(), endpoint: small.endpoint } });
      const refused = run(["image", "create", "too-big", "--from-volume", "imaged"], capped);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /sizeBytes: 1073741824 bytes are more than the Glance at http:\/\/127\.0\.0\.1:\d+ accepts/);
      assert.equal(refused.code, 2, "a size the service refuses is bad input");
      const smallClient = glanceImageService("glance", { ...glanceEntry(), endpoint: small.endpoint });
      try {
        assert.deepEqual(await smallClient.find({}), [], "the half-made image was deleted");
      } finally {
        smallClient.close();
      }
      assert.deepEqual(ok(run(["--json", "snapshot", "list", "imaged"], capped)).json<Array<{ name: string }>>().map((x) => x.name), ["before-c"]);
    } finally {
      small.stop();
    }
  });
  test("image create --disk-format F [--compress] of a volume; bad flags are named", async () => {
    const made = ok(run(["--json", "image", "create", "golden-qcow2", "--from-volume", "imaged", "--disk-format", "qcow2", "--compress"])).json<ImageRecord & { sentBytes: number }>();
    assert.equal(made.status, "active");
    assert.equal(made.diskFormat, "qcow2");
    assert.ok(made.sentBytes < 16 << 20, `a sparse volume makes a small qcow2 (${made.sentBytes} bytes)`);
    assert.match(ok(run(["image", "create", "golden-vmdk", "--from-snapshot", "before-c", "--disk-format", "vmdk"])).stdout, /^created vmdk image golden-vmdk \([0-9a-f-]{36}\) in glance from before-c: \d+ bytes/);
    const compressVmdk = run(["image", "create", "x", "--from-volume", "imaged", "--disk-format", "vmdk", "--compress"]);
    assert.equal(compressVmdk.code, 2, compressVmdk.stderr);
    assert.match(compressVmdk.stderr, /--compress: only a qcow2 image is compressed/);
    const qed = run(["image", "create", "x", "--from-volume", "imaged", "--disk-format", "qed"]);
    assert.equal(qed.code, 2);
    assert.match(qed.stderr, /--disk-format: must be one of raw, qcow2, vmdk, vhdx, vdi, not "qed"/);
    const digestOfVolume = run(["image", "create", "x", "--from-volume", "imaged", "--sha256", "0".repeat(64)]);
    assert.equal(digestOfVolume.code, 2);
    assert.match(digestOfVolume.stderr, /--sha256: applies to --file and --url/);
    assert.deepEqual(ok(run(["--json", "snapshot", "list", "imaged"])).json<Array<{ name: string }>>().map((x) => x.name), ["before-c"], "no temporary snapshot is left");
    for (const image of await client.find({})) if (image.name?.startsWith("golden-")) await client.delete(image.id);
  });

  test("image create --file | --url: checked digests, the format from the content, hostile files refused; nothing is left of a refusal", async () => {
    const files = join(dir, "files");
    const tmp = join(dir, "tmp");
    mkdirSync(files);
    mkdirSync(tmp);
    const raw = Buffer.concat([randomBytes(1 << 20), Buffer.alloc(1 << 20), randomBytes(4096)]);
    writeFileSync(join(files, "disk.raw"), raw);
    execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", join(files, "disk.raw"), join(files, "disk.qcow2")]);
    writeFileSync(join(files, "host-secret"), "secret\n");
    execFileSync("qemu-img", ["create", "-f", "qcow2", "-b", join(files, "host-secret"), "-F", "raw", join(files, "backed.qcow2"), "1M"]);
    const sha = (file: string) => createHash("sha256").update(readFileSync(join(files, file))).digest("hex");
    const server = await startImageServer(files);
    // The staging directory of a command is its TMPDIR.
    const runIn = (args: string[]) => kindlingAsync(["--config", config, ...args], { env: { XDG_DATA_HOME: join(dir, "data"), TMPDIR: tmp } });
    const names = async () => (await client.find({})).map((i) => i.name).filter((n) => n?.startsWith("src-"));
    try {
      const fromFile = ok(await runIn(["--json", "image", "create", "src-raw", "--file", join(files, "disk.raw"), "--sha256", sha("disk.raw")])).json<ImageRecord>();
      assert.equal(fromFile.diskFormat, "raw");
      assert.equal(fromFile.checksum, createHash("md5").update(raw).digest("hex"));
      const fromUrl = ok(await runIn(["--json", "image", "create", "src-qcow2", "--url", `${server.url}/disk.qcow2`, "--sha256", sha("disk.qcow2")])).json<ImageRecord>();
      assert.equal(fromUrl.diskFormat, "qcow2", "the format is the content's");
      assert.equal(fromUrl.checksum, createHash("md5").update(readFileSync(join(files, "disk.qcow2"))).digest("hex"));

      const wrong = await runIn(["image", "create", "src-wrong", "--url", `${server.url}/disk.qcow2`, "--sha256", sha("disk.raw")]);
      assert.notEqual(wrong.code, 0);
      assert.match(wrong.stderr, /its sha256 is [0-9a-f]{64}, but --sha256 says/);
      const unverified = await runIn(["image", "create", "src-unverified", "--file", join(files, "disk.raw")]);
      assert.equal(unverified.code, 2);
      assert.match(unverified.stderr, /offers no digest to check its bytes against.*--allow-unverified/);
      const hostile = await runIn(["image", "create", "src-hostile", "--file", join(files, "backed.qcow2"), "--allow-unverified"]);
      assert.equal(hostile.code, 2, hostile.stderr);
      assert.match(hostile.stderr, /refused by check qcow2\.backing_file/);
      const claimed = await runIn(["image", "create", "src-claimed", "--url", `${server.url}/disk.qcow2`, "--sha256", sha("disk.qcow2"), "--disk-format", "raw"]);
      assert.equal(claimed.code, 2);
      assert.match(claimed.stderr, /--disk-format: .*declared raw, but the content is qcow2/);
      assert.deepEqual((await names()).sort(), ["src-qcow2", "src-raw"], "a refusal leaves no image");
      assert.deepEqual(readdirSync(tmp).filter((n) => n.startsWith("kindling-image-")), [], "nor a staging file");
      const both = await runIn(["image", "create", "src-both", "--file", join(files, "disk.raw"), "--url", `${server.url}/disk.raw`]);
      assert.equal(both.code, 2);
      assert.match(both.stderr, /exactly one of/);
    } finally {
      await server.close();
      for (const image of await client.find({})) if (image.name?.startsWith("src-")) await client.delete(image.id);
    }
  });
});
