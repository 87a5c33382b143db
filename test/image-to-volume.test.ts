// An image into a new volume, from a file, an http URL and a real Glance (scripts/glance),
// through the command, on the file backend: a raw image is streamed, anything else (qcow2, a
// compressed image, a fixed VHD) staged, checked and converted; the volume holds the image's
// bytes, every digest is checked, a disk_format the content does not match is refused, and
// any failure (a digest, a cut transfer, a VHD footer found only at the end) leaves no volume
// and no staging file behind. (Every format and the hostile corpus: image-formats-to-volume.)
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { glanceImageService, type GlanceImageService } from "../provider/images/glance";
import { loadConfig, openBackends } from "../provider/library";
import { readAt } from "./helpers/backends";
import { KINDLING, kindlingAsync, ok } from "./helpers/cli";
import { removeDir, tempDir } from "./helpers/env";
import { GlanceServer, glanceMissing } from "./helpers/glance";
import { startImageServer, type ImageServer } from "./helpers/image-http";

const MiB = 1 << 20;
const sha = (algo: string, b: Buffer) => createHash(algo).update(b).digest("hex");

describe("an image into a new volume, through the command", () => {
  let dir: string;
  let config: string;
  let www: string;
  let server: ImageServer;
  let glance: GlanceServer | undefined;
  let client: GlanceImageService | undefined;
  // Data, a run of zeroes, data: what a disk image looks like.
  const image = Buffer.concat([randomBytes(2 * MiB + 512), Buffer.alloc(3 * MiB), randomBytes(MiB)]);
  // Not spawnSync: the http server the commands read from lives in this process.
  const run = (args: string[]) => kindlingAsync(["--config", config, ...args], { env: { XDG_DATA_HOME: join(dir, "data") } });
  const volumeNames = async () => ok(await run(["--json", "volume", "list"])).json<Array<{ name: string }>>().map((v) => v.name).sort();

  before(async () => {
    dir = tempDir("kindling-image-volume-");
    www = join(dir, "www");
    mkdirSync(www);
    writeFileSync(join(www, "disk.raw"), image);
    execFileSync("qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", join(www, "disk.raw"), join(www, "disk.qcow2")]);
    server = await startImageServer(www);
    if (!glanceMissing()) {
      glance = await GlanceServer.start();
      client = glanceImageService("glance", { type: "glance", endpoint: glance.endpoint, auth: { type: "noauth", projectId: "99887766554433221100", userId: "u" } });
    }
    const imageServices = glance ? { glance: { type: "glance", endpoint: glance.endpoint, auth: { type: "noauth", projectId: "99887766554433221100", userId: "u" } } } : undefined;
    config = join(dir, "kindling.json");
    writeFileSync(config, JSON.stringify({ backends: { local: { driver: "file", path: join(dir, "volumes") } }, imageServices }));
  });

  after(async () => {
    client?.close();
    glance?.stop();
    await server?.close();
    removeDir(dir);
  });

  const contents = async (name: string, length: number) => {
    const set = await openBackends(loadConfig({ path: config }));
    try {
      const volume = await set.get().getVolume(name);
      return { bytes: await readAt(volume, length), sizeGiB: volume.sizeGiB };
    } finally {
      await set.close();
    }
  };

  test("from a file with its sha256: the volume holds the image, zeroes after it, at the size the image needs", async () => {
    const made = ok(await run(["--json", "volume", "create", "from-file", "--image", `file:${join(www, "disk.raw")}`, "--sha256", sha("sha256", image)])).json<{ sizeGiB: number; status: string }>();
    assert.equal(made.sizeGiB, 1);
    assert.equal(made.status, "available");
    const { bytes } = await contents("from-file", image.length + MiB);
    assert.deepEqual(bytes.subarray(0, image.length), image);
    assert.ok(bytes.subarray(image.length).every((b) => b === 0));
    assert.equal(ok(await run(["--json", "volume", "create", "bigger", "--image", `file:${join(www, "disk.raw")}`, "--sha256", sha("sha256", image), "--size", "3"])).json<{ sizeGiB: number }>().sizeGiB, 3);
  });

  test("a source nobody vouches for needs --allow-unverified; a wrong digest leaves no volume", async () => {
    const before = await volumeNames();
    const unvouched = await run(["volume", "create", "nodigest", "--image", `file:${join(www, "disk.raw")}`]);
    assert.equal(unvouched.code, 2, unvouched.stderr);
    assert.match(unvouched.stderr, /image: .*disk\.raw offers no digest/);
    ok(await run(["volume", "create", "nodigest", "--image", `file:${join(www, "disk.raw")}`, "--allow-unverified"]));
    const wrong = await run(["volume", "create", "wrong", "--image", `file:${join(www, "disk.raw")}`, "--sha256", sha("sha256", Buffer.from("something else"))]);
    assert.equal(wrong.code, 1, wrong.stderr);
    assert.match(wrong.stderr, /its sha256 is [0-9a-f]{64}, but --sha256 says/);
    assert.deepEqual(await volumeNames(), [...before, "nodigest"].sort(), "nothing of the failed copy is left");
    assert.ok(!readdirSync(join(dir, "volumes"), { recursive: true }).some((f) => String(f).includes("wrong")));
  });

  test("other formats and compressed images are staged, checked and converted; the staging area is left empty", async () => {
    const qcow2 = join(www, "disk.qcow2");
    ok(await run(["volume", "create", "q", "--image", `file:${qcow2}`, "--allow-unverified"]));
    assert.deepEqual((await contents("q", image.length)).bytes, image);
    // A compressed raw image over http, with its digest (of the compressed bytes, as served).
    const gz = join(www, "disk.raw.gz");
    writeFileSync(gz, execFileSync("gzip", ["-c", join(www, "disk.raw")], { maxBuffer: 64 * MiB }));
    ok(await run(["volume", "create", "gz", "--image", `${server.url}/disk.raw.gz`, "--sha256", sha("sha256", readFileSync(gz))]));
    assert.deepEqual((await contents("gz", image.length)).bytes, image);
    // A fixed VHD is raw data with a footer in its last 512 bytes: read apart first, it is staged.
    const vhd = join(www, "disk.vhd");
    execFileSync("qemu-img", ["convert", "-q", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed", join(www, "disk.raw"), vhd]);
    ok(await run(["volume", "create", "vhd", "--image", `${server.url}/disk.vhd`, "--sha256", sha("sha256", readFileSync(vhd))]));
    assert.deepEqual((await contents("vhd", image.length)).bytes, image);
    assert.deepEqual(readdirSync(join(dir, "data", "kindling", "staging")), [], "every staging directory was removed");
  });

  test("a staged image cut short in transit, or with a wrong digest, leaves no volume and no staging file", async () => {
    const before = await volumeNames();
    const qcow2 = readFileSync(join(www, "disk.qcow2"));
    const cut = await run(["volume", "create", "q-cut", "--image", `${server.url}/drop/disk.qcow2`, "--sha256", sha("sha256", qcow2)]);
    assert.equal(cut.code, 1, cut.stderr);
    assert.match(cut.stderr, /the transfer ended after \d+ of \d+ bytes/);
    const wrong = await run(["volume", "create", "q-wrong", "--image", `${server.url}/disk.qcow2`, "--sha256", sha("sha256", Buffer.from("another image"))]);
    assert.equal(wrong.code, 1, wrong.stderr);
    assert.match(wrong.stderr, /its sha256 is [0-9a-f]{64}, but --sha256 says/);
    assert.deepEqual(await volumeNames(), before);
    assert.deepEqual(readdirSync(join(dir, "data", "kindling", "staging")), []);
  });

  test("Ctrl-C while staging or streaming stops the copy: no volume, no staging file, exit 130", async () => {
    const before = await volumeNames();
    const stagingDir = join(dir, "data", "kindling", "staging");
    const entries = (d: string) => (existsSync(d) ? readdirSync(d) : []);
    const volumeFiles = () => entries(join(dir, "volumes")).filter((f) => f.startsWith("volume-")).length;
    const files = volumeFiles();
    for (const [name, file, started] of [
      ["ctrl-c-staged", "disk.qcow2", () => entries(stagingDir).length > 0],
      // Streamed (from a server without ranges, so the stream is all there is): it stalls with the new volume's file made.
      ["ctrl-c-streamed", "norange/disk.raw", () => volumeFiles() > files],
    ] as const) {
      const child = spawn(KINDLING, ["--config", config, "volume", "create", name, "--image", `${server.url}/stall/${file}`, "--allow-unverified"], {
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", XDG_DATA_HOME: join(dir, "data") },
        stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
      const exited = new Promise<number | null>((ok) => child.once("exit", (code) => ok(code)));
      // Interrupted only once the copy is under way (bounded: the stalled server never finishes it).
      for (let i = 0; i < 600 && !started(); i++) await sleep(50);
      assert.ok(started(), `${name}: the copy started`);
      child.kill("SIGINT");
      assert.equal(await exited, 130, stderr);
      assert.match(stderr, /was interrupted; nothing was kept/);
      assert.deepEqual(entries(stagingDir), [], `${name}: no staging file`);
      assert.deepEqual(await volumeNames(), before, `${name}: no volume`);
      assert.equal(volumeFiles(), files, `${name}: no volume file`);
    }
  });

  test("a copy killed (SIGKILL) while staging leaves its staging directory; the next copy sweeps it", async () => {
    const stagingDir = join(dir, "data", "kindling", "staging");
    const child = spawn(KINDLING, ["--config", config, "volume", "create", "killed", "--image", `${server.url}/stall/disk.qcow2`, "--allow-unverified"], {
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", XDG_DATA_HOME: join(dir, "data") },
      stdio: "ignore",
    });
    const exited = new Promise<void>((ok) => child.once("exit", () => ok()));
    const left = () => (existsSync(stagingDir) ? readdirSync(stagingDir) : []);
    for (let i = 0; i < 600 && left().length === 0; i++) await sleep(50);
    const leftover = left();
    assert.equal(leftover.length, 1, "the copy was staging");
    child.kill("SIGKILL");
    await exited;
    assert.deepEqual(left(), leftover, "a killed process cannot remove its own");
    assert.ok(!(await volumeNames()).includes("killed"), "staging comes before the volume: there is none");
    ok(await run(["volume", "create", "after-kill", "--image", `file:${join(www, "disk.qcow2")}`, "--allow-unverified"]));
    assert.deepEqual(left(), [], "the next copy removed the dead one's staging directory");
    assert.deepEqual((await contents("after-kill", image.length)).bytes, image);
  });

  test("a fixed VHD from a server that cannot seek is found at the end of the stream: the volume is undone", async () => {
    const before = await volumeNames();
    const vhd = join(www, "disk.vhd");
    const v = await run(["volume", "create", "vhd-norange", "--image", `${server.url}/norange/disk.vhd`, "--sha256", sha("sha256", readFileSync(vhd))]);
    assert.equal(v.code, 2, v.stderr);
    assert.match(v.stderr, /disk\.vhd turned out at its end to be a vhd image, not raw; nothing was kept/);
    assert.deepEqual(await volumeNames(), before, "no volume was left by a refused image");
  });

  test("from an http URL; a transfer cut short leaves no volume", async () => {
    ok(await run(["volume", "create", "from-url", "--image", `${server.url}/disk.raw`, "--sha256", sha("sha256", image)]));
    assert.deepEqual((await contents("from-url", image.length)).bytes, image);
    const before = await volumeNames();
    const cut = await run(["volume", "create", "cut", "--image", `${server.url}/drop/disk.raw`, "--sha256", sha("sha256", image)]);
    assert.notEqual(cut.code, 0);
    assert.match(cut.stderr, /the transfer ended after \d+ of \d+ bytes/);
    assert.deepEqual(await volumeNames(), before);
  });

  test("from Glance: its own digests, its min_disk as the smallest size", { skip: glanceMissing() }, async () => {
    assert.ok(client);
    const made = await client.create({ name: "golden", diskFormat: "raw", minDiskGiB: 2 });
    await client.upload(made.id, Readable.from([image]));
    const small = await run(["volume", "create", "too-small", "--image", "glance:golden", "--size", "1"]);
    assert.equal(small.code, 2, small.stderr);
    assert.match(small.stderr, /sizeGiB: the image needs at least 2 GiB \(min_disk 2 GiB\), more than 1/);
    const v = ok(await run(["--json", "volume", "create", "from-glance", "--image", "glance:golden"])).json<{ sizeGiB: number }>();
    assert.equal(v.sizeGiB, 2);
    const { bytes } = await contents("from-glance", image.length);
    assert.deepEqual(bytes, image);
    const wrong = await run(["volume", "create", "glance-wrong", "--image", "glance:golden", "--sha512", sha("sha512", Buffer.from("x"))]);
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /--sha512 says/);
    assert.ok(!(await volumeNames()).includes("glance-wrong"));
  });

  test("from Glance, a qcow2 and a gzip-compressed one; a disk_format the content does not match is refused, naming it", { skip: glanceMissing() }, async () => {
    assert.ok(client);
    const raw = join(dir, "g.raw");
    writeFileSync(raw, image);
    const qcow2 = join(dir, "g.qcow2");
    execFileSync("qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", raw, qcow2]);
    const q = await client.create({ name: "golden-qcow2", diskFormat: "qcow2" });
    await client.upload(q.id, Readable.from([readFileSync(qcow2)]));
    ok(await run(["volume", "create", "from-glance-qcow2", "--image", "glance:golden-qcow2"]));
    assert.deepEqual((await contents("from-glance-qcow2", image.length)).bytes, image);
    const z = await client.create({ name: "golden-qcow2-gz", diskFormat: "qcow2", containerFormat: "compressed" });
    await client.upload(z.id, Readable.from([execFileSync("gzip", ["-c", qcow2], { maxBuffer: 64 * MiB })]));
    ok(await run(["volume", "create", "from-glance-gz", "--image", "glance:golden-qcow2-gz"]));
    assert.deepEqual((await contents("from-glance-gz", image.length)).bytes, image);
    // A fixed VHD: its footer is in its last bytes, which Glance serves apart (a ranged download).
    const fixed = await client.create({ name: "golden-vhd", diskFormat: "vhd" });
    await client.upload(fixed.id, Readable.from([readFileSync(join(www, "disk.vhd"))]));
    ok(await run(["volume", "create", "from-glance-vhd", "--image", "glance:golden-vhd"]));
    assert.deepEqual((await contents("from-glance-vhd", image.length)).bytes, image);
    // CVE-2024-40767: a qcow2 with a backing file declared raw. And a qcow2 declared vmdk.
    const before = await volumeNames();
    writeFileSync(join(dir, "g-secret"), Buffer.from("GLANCE-HOST-SECRET-".repeat(1000)));
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", join(dir, "g-secret"), "-F", "raw", join(dir, "g-backing.qcow2")]);
    const lie = await client.create({ name: "liar", diskFormat: "raw" });
    await client.upload(lie.id, Readable.from([readFileSync(join(dir, "g-backing.qcow2"))]));
    const refused = await run(["volume", "create", "liar", "--image", "glance:liar"]);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /refused by check format_mismatch: declared raw, but the content is qcow2/);
    const vmdk = await client.create({ name: "not-vmdk", diskFormat: "vmdk" });
    await client.upload(vmdk.id, Readable.from([readFileSync(qcow2)]));
    const mismatch = await run(["volume", "create", "not-vmdk", "--image", "glance:not-vmdk"]);
    assert.equal(mismatch.code, 2, mismatch.stderr);
    assert.match(mismatch.stderr, /refused by check format_mismatch: declared vmdk, but the content is qcow2/);
    assert.deepEqual(await volumeNames(), before);
    assert.deepEqual(readdirSync(join(dir, "data", "kindling", "staging")), []);
  });
});
