// Images through the real engine, against a real Glance (scripts/glance) named in the project's
// kindling.json: a Volume made from a Glance image (its bytes, its size left to the image, grown
// in place, replaced by another image), an Image made from a snapshot, a volume, a URL and a
// file (its bytes downloaded again), its name, tags and properties changed in place, refresh
// after the image is changed or deleted in Glance, a protected image kept, bad input refused at
// check naming the field, and destroy leaving no volume, snapshot or image behind. First, the
// provider's decisions on their own (what preview shows), without the engine.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, createReadStream, mkdirSync, openSync, readSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { after, before, describe, test, type TestContext } from "node:test";
import { glanceImageService, type GlanceImageService } from "../provider/images/glance";
import * as provider from "../provider/pulumi";
import { UNKNOWN } from "../provider/pulumi/inputs";
import { kindling } from "./helpers/cli";
import { removeDir, tempDir, writeDevice } from "./helpers/env";
import { GlanceServer, glanceMissing, needsGlance } from "./helpers/glance";
import { Project, type Resource } from "./helpers/pulumi";

const MiB = 1 << 20;
const GiB = 1 << 30;
const AUTH = { type: "noauth", projectId: "5566778899aabbccddee", userId: "images-e2e" };

const sha = (algo: string, b: Buffer) => createHash(algo).update(b).digest("hex");

const servers: ChildProcess[] = [];

/** test/helpers/image-http.ts serving `root`, in a child process (stopped by its pid in `after`); its URL. */
function startServerProcess(root: string): Promise<string> {
  const script = `require(${JSON.stringify(join(__dirname, "helpers", "image-http.js"))}).startImageServer(process.argv[1]).then((s) => console.log(s.url))`;
  const child = spawn(process.execPath, ["-e", script, root], { stdio: ["ignore", "pipe", "inherit"] });
  servers.push(child);
  return new Promise((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const line = /^(http\S+)\n/.exec(out);
      if (line) resolve(line[1]);
    });
    child.once("exit", (code) => reject(new Error(`the image server exited ${code}`)));
  });
}

async function streamSha256(stream: Readable): Promise<string> {
  const h = createHash("sha256");
  await pipeline(stream, async function* (chunks: AsyncIterable<Buffer>) {
    for await (const chunk of chunks) h.update(chunk);
  });
  return h.digest("hex");
}

function readFile(path: string, length: number, offset = 0): Buffer {
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, offset);
    return buf;
  } finally {
    closeSync(fd);
  }
}

describe("the provider's decisions on images (no engine, no Glance contacted)", () => {
  let dir: string;
  const saved = process.env.KINDLING_CONFIG;
  const backend = { name: "local", driver: "file", path: "/srv/volumes" };
  const volume = { backend, image: "glance:ubuntu", name: "boot", resourceName: "boot", ownerKey: "p/s/boot" };
  const volumeState = { ...volume, sizeGiB: 3, volumeId: "01a20f56-c115-7594-b0c7-57848923d17f", status: "available", backendName: "local", createdAt: "x", dump: {}, imageId: "i1", imageService: "glance" };
  const image = { backend, snapshot: "s1", name: "golden", tags: ["a"], properties: { role: "db" }, resourceName: "golden", ownerKey: "p/s/golden" };
  const imageState = { ...image, imageId: "i1", serviceName: "glance", status: "active", createdAt: "x" };

  before(() => {
    dir = tempDir("kindling-image-decisions-");
    const config = join(dir, "kindling.json");
    // Check reads the configuration only: this endpoint is never asked anything.
    writeFileSync(config, JSON.stringify({ backends: { local: backend }, imageServices: { glance: { type: "glance", endpoint: "http://127.0.0.1:9", auth: AUTH } } }));
    process.env.KINDLING_CONFIG = config;
  });
  after(() => {
    if (saved === undefined) delete process.env.KINDLING_CONFIG;
    else process.env.KINDLING_CONFIG = saved;
    removeDir(dir);
  });

  test("a volume sized by its image asks for no size later; a larger size grows it in place", async () => {
    assert.deepEqual((await provider.volume.check({}, volume)).failures, []);
    const same = await provider.volume.diff(volumeState.volumeId, volumeState, volume);
    assert.equal(same.changes, false, "no sizeGiB is no change");
    const grown = await provider.volume.diff(volumeState.volumeId, volumeState, { ...volume, sizeGiB: 4 });
    assert.equal(grown.changes, true);
    assert.deepEqual(grown.replaces, []);
  });

  test("another image, another digest, or one unknown in preview replaces the volume", async () => {
    for (const [news, key] of [
      [{ ...volume, image: "glance:debian" }, "image"],
      [{ ...volume, imageSha256: "a".repeat(64) }, "imageSha256"],
      [{ ...volume, imageSha512: "b".repeat(128) }, "imageSha512"],
      [{ ...volume, image: UNKNOWN }, "image"],
    ] as const) {
      const d = await provider.volume.diff(volumeState.volumeId, volumeState, news);
      assert.deepEqual(d.replaces, [key]);
      assert.equal(d.deleteBeforeReplace, true, "same name: the old one goes first");
    }
  });

  test("volume check: the image with another source, digests without an image, a service not configured", async () => {
    const by = async (news: Record<string, unknown>) => Object.fromEntries((await provider.volume.check({}, news)).failures.map((f) => [f.property, f.reason]));
    assert.match((await by({ ...volume, snapshotId: "s" })).image, /give one of image, snapshotId, sourceVolumeId and adopt/);
    assert.match((await by({ backend, sizeGiB: 1, imageSha256: "a".repeat(64) })).imageSha256, /only with image/);
    assert.match((await by({ ...volume, image: "elsewhere:x" })).image, /no image service "elsewhere" is configured/);
    assert.match((await by({ ...volume, image: "ubuntu" })).image, /is not an image reference/);
    assert.deepEqual(await by({ ...volume, image: UNKNOWN }), {}, "unknown in preview: not judged");
  });

  test("image diff: metadata in place, the source replaces, the new image made first", async () => {
    for (const news of [{ ...image, name: "golden-2" }, { ...image, tags: ["b"] }, { ...image, properties: {} }, { ...image, visibility: "shared" as const }, { ...image, protected: true }]) {
      const d = await provider.image.diff("i1", imageState, news);
      assert.equal(d.changes, true, JSON.stringify(news));
      assert.deepEqual(d.replaces, []);
    }
    assert.equal((await provider.image.diff("i1", imageState, image)).changes, false);
    for (const [news, key] of [[{ ...image, snapshot: "s2" }, "snapshot"], [{ ...image, snapshot: UNKNOWN }, "snapshot"], [{ ...image, service: "other" }, "service"]] as const) {
      const d = await provider.image.diff("i1", imageState, news);
      assert.deepEqual(d.replaces, [key]);
      assert.equal(d.deleteBeforeReplace, false);
    }
  });

  test("image check: each failure names its field", async () => {
    const by = async (news: Record<string, unknown>) => Object.fromEntries((await provider.image.check({}, news)).failures.map((f) => [f.property, f.reason]));
    assert.deepEqual(await by(image), {});
    assert.match((await by({ ...image, sha256: "a".repeat(64) })).sha256, /only for a url or file source/);
    assert.match((await by({ ...image, allowUnverified: true })).allowUnverified, /only for a url or file source/);
    assert.deepEqual(await by({ ...image, snapshot: undefined, url: "http://127.0.0.1:9/disk.raw", sha256: "a".repeat(64) }), {});
    assert.match((await by({ ...image, backend: undefined })).backend, /is required with snapshot/);
    assert.match((await by({ ...image, properties: { status: "x" } })).properties, /properties\.status: is the image service's own field/);
    assert.match((await by({ ...image, properties: { kindling_pulumi_owner: "x" } })).properties, /is kindling's own/);
    assert.match((await by({ ...image, service: "other" })).service, /no image service named "other"/);
    assert.match((await by({ ...image, tags: ["a", ""] })).tags, /^tags\.1:/);
    assert.match((await by({ ...image, snapshot: undefined, url: "ftp://x" })).url, /^url: must be an http/);
  });
});

describe("images through the real engine", () => {
  let dir: string;
  let glance: GlanceServer | undefined;
  let client: GlanceImageService;
  let project: Project;
  let config: string;
  // A disk image: data, a run of zeroes, data.
  const first = Buffer.concat([randomBytes(MiB + 512), Buffer.alloc(2 * MiB), randomBytes(MiB)]);
  const second = Buffer.concat([randomBytes(3 * MiB), Buffer.alloc(MiB)]);
  const sourceIds: string[] = [];
  /** Written into base before it is snapshotted: what the image must hold. */
  const marks = [{ at: 0, data: randomBytes(MiB) }, { at: 512 * MiB + 4096, data: Buffer.from("MIDDLE OF THE SNAPSHOT") }];

  const cli = (...args: string[]) => {
    const r = kindling(["--config", config, "--json", ...args]);
    assert.equal(r.code, 0, r.stderr);
    return r.json();
  };
  const upload = async (name: string, data: Buffer) => {
    const image = await client.create({ name, diskFormat: "raw" });
    await client.upload(image.id, Readable.from([data]));
    sourceIds.push(image.id);
    return image.id;
  };
  const state = (name: string) => project.stateResources()[name]?.outputs as Record<string, unknown> | undefined;
  const noChanges = () => {
    const r = project.run(["preview", "--expect-no-changes"]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  };
  /** `pulumi preview` refused at check: the message names the field. */
  const refused = (resources: Resource[], pattern: RegExp) => {
    project.program(resources);
    const r = project.run(["preview"]);
    assert.notEqual(r.code, 0, `preview should fail: ${r.stdout}`);
    assert.match(r.stdout + r.stderr, pattern);
  };

  before(async () => {
    // A before hook cannot skip: the tests skip themselves, saying why.
    if (glanceMissing()) return;
    dir = tempDir("kindling-pulumi-images-");
    glance = await GlanceServer.start();
    client = glanceImageService("glance", { type: "glance", endpoint: glance.endpoint, auth: AUTH });
    const pool = join(dir, "volumes");
    project = new Project({ name: "imaging", driver: "file", path: pool });
    // Where the provider (running in the project's directory) and the command find the image service.
    config = join(project.dir, "kindling.json");
    writeFileSync(config, JSON.stringify({ backends: { imaging: { driver: "file", path: pool } }, imageServices: { glance: { type: "glance", endpoint: glance.endpoint, auth: AUTH } } }));
    project.init();
  });

  after(() => {
    for (const server of servers) if (server.exitCode === null) process.kill(server.pid!);
    try {
      if (project) {
        project.run(["destroy", "--yes"]);
        removeDir(project.dir);
      }
      client?.close();
      glance?.stop();
    } finally {
      if (dir) removeDir(dir);
    }
  });

  const skip = (t: TestContext) => needsGlance(t);

  const boot = (args: Record<string, unknown> = {}): Resource => ({ type: "Volume", name: "boot", args: { image: "glance:source-v1", ...args } });
  const base: Resource = { type: "Volume", name: "base", args: { sizeGiB: 1 } };
  const snap: Resource = { type: "Snapshot", name: "snap", args: { volumeId: "@base.volumeId" } };
  const golden = (args: Record<string, unknown> = {}): Resource => ({
    type: "Image",
    name: "golden",
    args: { snapshot: "@snap.snapshotId", name: "golden", tags: ["t1", "t2"], properties: { role: "db", tier: "gold" }, ...args },
  });

  test("a Volume from a Glance image: its bytes, the size the image needs, the image recorded; it grows in place", async (t) => {
    if (skip(t)) return;
    const id = await upload("source-v1", first);
    project.program([boot()]);
    project.up();
    const made = project.outputs().boot;
    assert.equal(made.sizeGiB, 1, "sized by the image");
    assert.deepEqual(readFile(made.location as string, first.length), first);
    assert.ok(readFile(made.location as string, MiB, first.length).every((b) => b === 0), "zeroes after the image");
    const outs = state("boot")!;
    assert.equal(outs.imageId, id);
    assert.equal(outs.imageService, "glance");
    assert.equal(outs.imageDigest, `sha512:${sha("sha512", first)}`, "checked against Glance's os_hash_value");
    noChanges();

    project.program([boot({ sizeGiB: 2 })]);
    assert.equal(project.previewSteps().boot, "update");
    project.up();
    const grown = project.outputs().boot;
    assert.equal(grown.id, made.id, "the same volume");
    assert.equal(grown.sizeGiB, 2);
    assert.equal(statSync(grown.location as string).size, 2 * GiB);
    assert.deepEqual(readFile(grown.location as string, first.length), first, "its data kept");
    assert.equal(state("boot")!.imageId, id, "the origin is kept across updates");
    noChanges();
  });

  test("another image, or a digest added, replaces the volume: preview says so and the run does it", async (t) => {
    if (skip(t)) return;
    const before = project.outputs().boot;
    project.program([boot({ sizeGiB: 2, imageSha256: sha("sha256", first) })]);
    assert.equal(project.previewSteps().boot, "replace", "a digest is part of what the volume holds");
    const id = await upload("source-v2", second);
    project.program([boot({ image: "glance:source-v2", sizeGiB: 2 })]);
    assert.equal(project.previewSteps().boot, "replace");
    project.up();
    const after = project.outputs().boot;
    assert.notEqual(after.id, before.id, "a new volume");
    assert.equal(after.sizeGiB, 2);
    assert.deepEqual(readFile(after.location as string, second.length), second);
    assert.equal(state("boot")!.imageId, id);
    assert.equal(kindling(["--config", config, "volume", "show", before.id]).code, 3, "the old volume is gone");
    noChanges();
  });

  test("an Image from a snapshot: Glance holds the snapshot's bytes, with the program's name, tags and properties", async (t) => {
    if (skip(t)) return;
    const keep = boot({ image: "glance:source-v2", sizeGiB: 2 });
    project.program([keep, base]);
    project.up();
    const location = project.outputs().base.location as string;
    for (const m of marks) writeDevice(location, m.data, m.at);
    project.program([keep, base, snap, golden()]);
    project.up();
    const id = project.outputs().golden.id;
    const image = await client.show(id);
    assert.equal(image.status, "active");
    assert.equal(image.name, "golden");
    assert.deepEqual([...image.tags].sort(), ["t1", "t2"]);
    assert.equal(image.properties.role, "db");
    assert.equal(image.properties.tier, "gold");
    assert.equal(image.properties.kindling_snapshot_id, project.outputs().snap.id, "where it came from");
    assert.equal(image.sizeBytes, GiB);
    const outs = state("golden")!;
    assert.equal(outs.imageId, id);
    assert.equal(outs.serviceName, "glance");
    assert.equal(outs.status, "active");
    assert.equal(outs.sizeBytes, GiB);
    assert.equal(outs.checksum, image.checksum);
    assert.equal(outs.hashAlgo, image.hash?.algo);
    assert.equal(outs.hashValue, image.hash?.value);
    assert.equal(outs.diskFormat, "raw");
    // base is not written after the snapshot: its file holds the snapshot's bytes.
    const downloaded = await streamSha256((await client.download(id)).body);
    assert.equal(downloaded, await streamSha256(createReadStream(location)), "the image holds the snapshot's bytes");
    noChanges();
  });

  test("an Image from a volume (through a temporary snapshot, removed again); taken out of the program, it is deleted", async (t) => {
    if (skip(t)) return;
    const keep = [boot({ image: "glance:source-v2", sizeGiB: 2 }), base, snap, golden()];
    project.program([...keep, { type: "Image", name: "copy", args: { volume: "@base.volumeId", visibility: "shared" } }]);
    project.up();
    const id = project.outputs().copy.id;
    const image = await client.show(id);
    assert.equal(image.visibility, "shared");
    assert.equal(image.properties.kindling_volume_id, project.outputs().base.id);
    assert.equal(image.name, state("copy")!.name, "the default name, recorded");
    const location = project.outputs().base.location as string;
    assert.equal(await streamSha256((await client.download(id)).body), await streamSha256(createReadStream(location)), "the image holds the volume's bytes");
    assert.deepEqual(cli("snapshot", "list").map((x: { id: string }) => x.id), [project.outputs().snap.id], "no temporary snapshot left");
    // The image service's endpoint and identity come from the configuration, never the state.
    const exported = project.ok(["stack", "export", "--show-secrets"]).stdout;
    assert.ok(!exported.includes(glance!.endpoint) && !exported.includes(AUTH.projectId), "nothing of the image service's configuration in the state");
    project.program(keep);
    project.up();
    assert.equal(state("copy"), undefined);
    await assert.rejects(client.show(id), /not found/, "the image is deleted");
  });

  test("name, tags and properties change in place: the same image, one property removed", async (t) => {
    if (skip(t)) return;
    const id = project.outputs().golden.id;
    const keep = boot({ image: "glance:source-v2", sizeGiB: 2 });
    project.program([keep, base, snap, golden({ name: "golden-2", tags: ["t2", "t3"], properties: { role: "web" } })]);
    const steps = project.previewSteps();
    assert.deepEqual(Object.entries(steps).filter(([, op]) => op !== "same"), [["golden", "update"]], JSON.stringify(steps));
    // What preview plans for the image keeps its id known (see stables.ts): a resource that
    // takes it as an input is not shown as replaced.
    const planned = JSON.parse(project.ok(["preview", "--json"]).stdout).steps as Array<{ urn: string; newState?: { inputs?: Record<string, unknown> } }>;
    const step = planned.find((x) => x.urn.endsWith("::golden"));
    assert.equal(step?.newState?.inputs?.imageId, id, JSON.stringify(step));
    project.up();
    assert.equal(project.outputs().golden.id, id, "the same image");
    const image = await client.show(id);
    assert.equal(image.name, "golden-2");
    assert.deepEqual([...image.tags].sort(), ["t2", "t3"]);
    assert.equal(image.properties.role, "web");
    assert.equal(image.properties.tier, undefined, "a property the program no longer sets is removed");
    assert.ok(image.properties.kindling_snapshot_id, "what the source carried is left alone");
    noChanges();
  });

  test("refresh: a property and a tag changed in Glance show as a diff, and up puts them back", async (t) => {
    if (skip(t)) return;
    const id = project.outputs().golden.id;
    await client.update(id, { set: { properties: { role: "changed-by-hand", added: "by hand" } }, tags: ["t2"] });
    assert.equal(project.previewSteps(["--refresh"]).golden, "update");
    const drift = project.run(["preview", "--refresh", "--expect-no-changes"]);
    assert.notEqual(drift.code, 0, "the drift is a change");
    project.ok(["up", "--refresh", "--yes"]);
    const image = await client.show(id);
    assert.equal(project.outputs().golden.id, id);
    assert.equal(image.properties.role, "web");
    assert.deepEqual([...image.tags].sort(), ["t2", "t3"]);
    assert.equal(image.properties.added, "by hand", "a property the program never set is not its to remove");
    noChanges();
  });

  test("refresh: an image deleted in Glance leaves the state; the next up makes it again, deleting what a killed up left half made", async (t) => {
    if (skip(t)) return;
    const id = project.outputs().golden.id;
    const ownerKey = project.stateResources().golden.inputs.ownerKey as string;
    await client.delete(id);
    project.ok(["refresh", "--yes"]);
    assert.equal(state("golden"), undefined, "gone from the state");
    assert.ok(state("snap"), "the rest stays");
    // What an `up` killed mid-upload leaves: an image of this resource with no data.
    const leftover = await client.create({ name: "golden-2", diskFormat: "raw", properties: { kindling_pulumi_owner: ownerKey } });
    project.up();
    const again = project.outputs().golden.id;
    assert.notEqual(again, id);
    const made = await client.show(again);
    assert.equal(made.status, "active");
    assert.equal(made.properties.kindling_pulumi_owner, ownerKey, "the image says which resource it was made for");
    await assert.rejects(client.show(leftover.id), /not found/, "the half-made image is deleted");
  });

  test("an Image from a URL and from a file: their bytes, every digest checked; a wrong one leaves no image", async (t) => {
    if (skip(t)) return;
    const www = join(dir, "www");
    mkdirSync(www);
    writeFileSync(join(www, "disk.raw"), first);
    // The engine's provider fetches the URL while this process waits on the engine: the server runs in a process of its own.
    const url = await startServerProcess(www);
    const keep = [boot({ image: "glance:source-v2", sizeGiB: 2 }), base, snap, golden()];
    project.program([
      ...keep,
      { type: "Image", name: "fromUrl", args: { url: `${url}/disk.raw`, sha256: sha("sha256", first) } },
      { type: "Image", name: "fromFile", args: { file: join(www, "disk.raw"), allowUnverified: true, tags: ["file"] } },
    ]);
    project.up();
    for (const name of ["fromUrl", "fromFile"]) {
      const id = project.outputs()[name].id;
      const image = await client.show(id);
      assert.equal(image.status, "active");
      assert.equal(image.diskFormat, "raw", "the format the content has");
      assert.equal(image.sizeBytes, first.length);
      assert.equal(state(name)!.hashValue, sha("sha512", first));
      assert.equal(await streamSha256((await client.download(id)).body), sha("sha256", first), `${name} holds the bytes`);
    }
    project.program([...keep, { type: "Image", name: "wrong", args: { url: `${url}/disk.raw`, sha256: "0".repeat(64), name: "wrong-digest" } }]);
    const failed = project.run(["up", "--yes", "--skip-preview"]);
    assert.notEqual(failed.code, 0);
    assert.match(failed.stdout + failed.stderr, /sha256/);
    assert.deepEqual(await client.find({ name: "wrong-digest" }), [], "no image left behind");
    assert.equal(state("wrong"), undefined);
    const made = ["fromUrl", "fromFile"].map((name) => project.stateResources()[name]?.id);
    project.program(keep);
    project.up();
    for (const id of made) await assert.rejects(client.show(id as string), /not found/, "taken out of the program, deleted");
  });

  test("bad input is refused at check, naming the field", async (t) => {
    if (skip(t)) return;
    const keep = [boot({ image: "glance:source-v2", sizeGiB: 2 }), base, snap];
    const extra = (args: Record<string, unknown>): Resource => ({ type: "Image", name: "bad", args });
    refused([...keep, extra({ volume: "@base.volumeId", snapshot: "@snap.snapshotId" })], /snapshot: give one source of volume, snapshot, url and file, not volume and snapshot/);
    refused([...keep, extra({ name: "nothing" })], /volume: give the image's source/);
    refused([...keep, extra({ snapshot: "@snap.snapshotId", visibility: "secret" })], /visibility: must be one of private, shared, community, public/);
    refused([...keep, { type: "Volume", name: "bad", args: { image: "nowhere:x" } }], /image: no image service "nowhere" is configured/);
    refused([...keep, { type: "Volume", name: "bad", args: { image: "glance:source-v2", imageSha256: "abc" } }], /imageSha256: must be a sha256 digest/);
    refused([...keep, { type: "Volume", name: "bad", args: {} }], /sizeGiB: is required/);
    assert.equal(state("bad"), undefined, "nothing was made");
  });

  test("a protected image is not deleted until the program unprotects it", async (t) => {
    if (skip(t)) return;
    const keep = [boot({ image: "glance:source-v2", sizeGiB: 2 }), base, snap];
    project.program([...keep, golden({ protected: true })]);
    project.up();
    const id = project.outputs().golden.id;
    assert.equal((await client.show(id)).protected, true);
    project.program(keep);
    const refusedDelete = project.run(["up", "--yes", "--skip-preview"]);
    assert.notEqual(refusedDelete.code, 0, "the delete is refused");
    assert.match(refusedDelete.stdout + refusedDelete.stderr, /is protected, so it is not deleted/);
    assert.equal((await client.show(id)).status, "active", "the image is still there");
    assert.ok(state("golden"), "and still in the state");
    project.program([...keep, golden({ protected: false })]);
    project.up();
    assert.equal(project.outputs().golden.id, id);
    assert.equal((await client.show(id)).protected, false);
  });

  test("destroy leaves no volume, no snapshot and no image", async (t) => {
    if (skip(t)) return;
    project.ok(["destroy", "--yes"]);
    assert.deepEqual(project.stateResources(), {});
    assert.deepEqual(cli("volume", "list"), []);
    assert.deepEqual(cli("snapshot", "list"), []);
    const left = (await client.find({})).map((i) => i.id).sort();
    assert.deepEqual(left, [...sourceIds].sort(), "only the images the test uploaded itself");
  });
});
