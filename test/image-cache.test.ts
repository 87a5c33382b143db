// The content-keyed image cache through the command, with real processes, a loopback http
// server (its requests counted), a real Glance (scripts/glance) and the file backend: a miss
// downloads once and a hit clones without a single request, two processes asking at once
// download once, eviction goes least recently used first under maxSizeGiB and never takes a
// pinned entry or one in use, a metadata edit in Glance still hits, and the cached volume is no
// user's volume (not listed, not deletable, still there after its clones are deleted). On rbd
// (a real Ceph) volumes are rbd clones of the cached image, which is not evicted while they last.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { hexDigest } from "../provider/images/digest";
import { glanceImageService, type GlanceImageService } from "../provider/images/glance";
import { FileSource } from "../provider/images/sources/file";
import { loadConfig, openBackends } from "../provider/library";
import type { CacheListing } from "../provider/library/image-cache";
import { readAt } from "./helpers/backends";
import { KINDLING, kindlingAsync, ok, type CliResult } from "./helpers/cli";
import { removeDir, tempDir } from "./helpers/env";
import { CephCluster, cephMissing } from "./helpers/ceph";
import { GlanceServer, glanceMissing } from "./helpers/glance";
import { startImageServer, type ImageServer } from "./helpers/image-http";

const MiB = 1 << 20;
const sha = (algo: string, b: Buffer) => createHash(algo).update(b).digest("hex");
/** Data, a run of zeroes, data: what a disk image looks like; each call other bytes. */
const diskImage = () => Buffer.concat([randomBytes(MiB + 512), Buffer.alloc(2 * MiB), randomBytes(MiB)]);

describe("the image cache", () => {
  let dir: string;
  let www: string;
  let server: ImageServer;
  const images = { a: diskImage(), b: diskImage(), c: diskImage() };

  before(async () => {
    dir = tempDir("kindling-image-cache-");
    www = join(dir, "www");
    mkdirSync(www);
    for (const [name, bytes] of Object.entries(images)) writeFileSync(join(www, `${name}.raw`), bytes);
    server = await startImageServer(www);
  });

  after(async () => {
    await server?.close();
    removeDir(dir);
  });

  /** A backend of its own (its own volumes, records and cache) with these cache limits. */
  const setup = (name: string, imageCache: Record<string, unknown> | undefined, extra: Record<string, unknown> = {}) => {
    const config = join(dir, `${name}.json`);
    writeFileSync(config, JSON.stringify({ backends: { local: { driver: "file", path: join(dir, name) } }, imageCache, ...extra }));
    const run = (args: string[]) => kindlingAsync(["--config", config, ...args], { env: { XDG_DATA_HOME: join(dir, "data") } });
    return {
      config,
      run,
      volumeDir: join(dir, name),
      list: async () => ok(await run(["--json", "image", "cache", "list"])).json<CacheListing[]>(),
      volumes: async () => ok(await run(["--json", "volume", "list"])).json<Array<{ name: string; id: string }>>(),
      contents: async (volumeName: string, length: number) => {
        const set = await openBackends(loadConfig({ path: config }));
        try {
          const volume = await set.get().getVolume(volumeName);
          return { bytes: await readAt(volume, length), sizeGiB: volume.sizeGiB };
        } finally {
          await set.close();
        }
      },
    };
  };
  const gets = (path: string) => server.seen.filter((r) => r.startsWith(`GET ${path}`)).length;
  const fileRef = (name: keyof typeof images) => [`file:${join(www, `${name}.raw`)}`, "--sha256", sha("sha256", images[name])];

  test("a miss downloads once, a hit clones the cached volume with no request at all, at any size", async () => {
    const s = setup("hit", { maxSizeGiB: 10 });
    const url = `${server.url}/a.raw`;
    server.seen.length = 0;
    const first = ok(await s.run(["--json", "volume", "create", "first", "--image", url, "--sha256", sha("sha256", images.a)])).json<{ sizeGiB: number }>();
    assert.equal(first.sizeGiB, 1);
    assert.equal(gets("/a.raw"), 1, server.seen.join("\n"));
    server.seen.length = 0;
    const second = ok(await s.run(["--json", "volume", "create", "second", "--image", url, "--sha256", sha("sha256", images.a), "--size", "3"])).json<{ sizeGiB: number }>();
    assert.equal(second.sizeGiB, 3);
    assert.deepEqual(server.seen, [], "a pinned digest that is cached needs no request, not even a HEAD");
    for (const name of ["first", "second"]) {
      const { bytes } = await s.contents(name, images.a.length + MiB);
      assert.deepEqual(bytes.subarray(0, images.a.length), images.a, name);
      assert.ok(bytes.subarray(images.a.length).every((b) => b === 0), `${name} reads zeroes past the image`);
    }
    const [entry, ...more] = await s.list();
    assert.deepEqual(more, []);
    assert.equal(entry.uses, 2);
    assert.equal(entry.digests.sha256, sha("sha256", images.a));
    assert.equal(entry.digests.sha512, sha("sha512", images.a), "every digest is computed while filling");
    assert.equal(entry.digests.md5, sha("md5", images.a));
    // The same bytes by another way in (a local file) are the same entry.
    ok(await s.run(["volume", "create", "third", "--image", ...fileRef("a")]));
    assert.equal((await s.list())[0].uses, 3);
    // Turned off for one call: copied from the source, the entry untouched.
    server.seen.length = 0;
    ok(await s.run(["volume", "create", "uncached", "--image", url, "--sha256", sha("sha256", images.a), "--no-cache"]));
    assert.equal(gets("/a.raw"), 1);
    assert.equal((await s.list())[0].uses, 3);
  });

  test("the cached volume is no user's volume: not listed, not deletable, there after its clones are gone", async () => {
    const s = setup("hidden", { maxSizeGiB: 10 });
    ok(await s.run(["volume", "create", "mine", "--image", ...fileRef("b")]));
    const [entry] = await s.list();
    const cachedFile = join(s.volumeDir, `volume-${entry.volumeId}`);
    assert.ok(existsSync(cachedFile), "the cached volume is an ordinary volume of the driver");
    assert.deepEqual((await s.volumes()).map((v) => v.name), ["mine"]);
    const refused = await s.run(["volume", "delete", entry.volumeId]);
    assert.equal(refused.code, 3, refused.stderr);
    ok(await s.run(["volume", "delete", "mine"]));
    assert.deepEqual(await s.volumes(), []);
    assert.ok(existsSync(cachedFile));
    assert.equal((await s.list()).length, 1);
    ok(await s.run(["volume", "create", "again", "--image", ...fileRef("b")]));
    assert.deepEqual((await s.contents("again", images.b.length)).bytes, images.b);
    assert.equal((await s.list())[0].uses, 2);
  });

  test("least recently used first under maxSizeGiB; the clones of an evicted entry keep their data", async () => {
    // Each image takes a 1 GiB cached volume: two fit.
    const s = setup("lru", { maxSizeGiB: 2 });
    ok(await s.run(["volume", "create", "a1", "--image", ...fileRef("a")]));
    ok(await s.run(["volume", "create", "b1", "--image", ...fileRef("b")]));
    ok(await s.run(["volume", "create", "a2", "--image", ...fileRef("a")])); // a is now the more recent
    const before = await s.list();
    const b = before.find((e) => e.digests.sha256 === sha("sha256", images.b));
    assert.ok(b);
    ok(await s.run(["volume", "create", "c1", "--image", ...fileRef("c")]));
    const after = await s.list();
    assert.deepEqual(after.map((e) => e.digests.sha256).sort(), [sha("sha256", images.a), sha("sha256", images.c)].sort());
    assert.ok(!existsSync(join(s.volumeDir, `volume-${b.volumeId}`)), "the evicted entry's volume is deleted");
    assert.deepEqual((await s.contents("b1", images.b.length)).bytes, images.b, "a reflink or copy shares nothing with its source");
    // b again: a miss (it was evicted), and now a, the least recently used, goes.
    ok(await s.run(["volume", "create", "b2", "--image", ...fileRef("b")]));
    assert.deepEqual((await s.list()).map((e) => e.digests.sha256).sort(), [sha("sha256", images.b), sha("sha256", images.c)].sort());
  });

  test("pinned entries stay through eviction and prune; prune --all takes the rest", async () => {
    const s = setup("pins", { maxSizeGiB: 2 });
    const warmed = ok(await s.run(["--json", "image", "cache", "warm", ...fileRef("a"), "--pin"])).json<CacheListing>();
    assert.equal(warmed.pinned, true);
    ok(await s.run(["image", "cache", "warm", ...fileRef("b")]));
    ok(await s.run(["image", "cache", "warm", ...fileRef("c")])); // a is the oldest, but pinned: b goes
    const names = async () => (await s.list()).map((e) => e.digests.sha256).sort();
    assert.deepEqual(await names(), [sha("sha256", images.a), sha("sha256", images.c)].sort());
    const pruned = ok(await s.run(["--json", "image", "cache", "prune", "--all"])).json<CacheListing[]>();
    assert.deepEqual(pruned.map((e) => e.digests.sha256), [sha("sha256", images.c)]);
    assert.deepEqual(await names(), [sha("sha256", images.a)]);
    // A key is the entry's sha256 or 8 or more of its first digits.
    ok(await s.run(["image", "cache", "unpin", sha("sha256", images.a).slice(0, 10)]));
    const unknown = await s.run(["image", "cache", "pin", "0123456789abcdef"]);
    assert.equal(unknown.code, 3, unknown.stderr);
    ok(await s.run(["image", "cache", "prune", "--all"]));
    assert.deepEqual(await s.list(), []);
    assert.deepEqual((await s.volumes()), [], "warming makes no user volume");
  });

  test("limits that make no sense are refused naming the field, before anything is opened", async () => {
    for (const [imageCache, rule] of [[{ maxSizeGiB: 0 }, /imageCache\.maxSizeGiB: must be more than 0/], [{ maxCount: 1.5 }, /imageCache\.maxCount: must be a whole number/], [{ maxSizeGB: 10 }, /imageCache.*maxSizeGB/]] as const) {
      const s = setup("bad", imageCache);
      const r = await s.run(["volume", "list"]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, rule);
      assert.ok(!existsSync(s.volumeDir), "nothing was made");
    }
  });

  test("a cached image larger than the whole cache is not cached, and the volume is still made", async () => {
    const s = setup("toolarge", { maxSizeGiB: 0.5 });
    ok(await s.run(["volume", "create", "big", "--image", ...fileRef("a")]));
    assert.deepEqual(await s.list(), []);
    assert.deepEqual((await s.contents("big", images.a.length)).bytes, images.a);
    const warm = await s.run(["image", "cache", "warm", ...fileRef("a")]);
    assert.equal(warm.code, 2, warm.stderr);
    assert.match(warm.stderr, /cannot be cached: it needs 1 GiB and the cache's limits \(maxSizeGiB 0\.5\)/);
  });

  test("a failed fill leaves no entry and no volume; an image the cache does not take is refused as without it", async () => {
    const s = setup("failed", { maxSizeGiB: 10 });
    const files = () => readdirSync(s.volumeDir).filter((f) => f.startsWith("volume-"));
    const wrong = await s.run(["volume", "create", "wrong", "--image", `file:${join(www, "a.raw")}`, "--sha256", sha("sha256", images.b)]);
    assert.equal(wrong.code, 1, wrong.stderr);
    assert.match(wrong.stderr, /its sha256 is [0-9a-f]{64}, but --sha256 says/);
    assert.deepEqual(await s.list(), []);
    assert.deepEqual(files(), [], "neither the cached volume nor the user's");
    const qcow2 = join(dir, "cached.qcow2");
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", qcow2, "64M"]);
    const q = await s.run(["volume", "create", "q", "--image", `file:${qcow2}`, "--sha256", sha("sha256", readFileSync(qcow2))]);
    assert.equal(q.code, 2, q.stderr);
    assert.match(q.stderr, /is a qcow2 image; only raw images are copied to volumes so far/);
    assert.deepEqual(await s.list(), []);
    assert.deepEqual(files(), []);
    assert.deepEqual(await s.volumes(), []);
  });

  test("an entry in use (a clone being made from it) is not evicted", async () => {
    const s = setup("inuse", { maxSizeGiB: 10 });
    ok(await s.run(["image", "cache", "warm", ...fileRef("c")]));
    // This process makes a volume from the entry through the library, and holds the real
    // driver's clone call at its start (nothing replaced: the clone runs once let go), while
    // another process prunes everything it may.
    const set = await openBackends(loadConfig({ path: s.config }));
    try {
      const backend = set.get();
      const file = new FileSource(join(www, "c.raw"), [hexDigest("sha256", sha("sha256", images.c), "--sha256", "image")]);
      let cloning!: () => void;
      const started = new Promise<void>((resolve) => (cloning = resolve));
      let resume!: () => void;
      const gate = new Promise<void>((resolve) => (resume = resolve));
      const clone = backend.driver.cloneVolume.bind(backend.driver);
      Object.defineProperty(backend.driver, "cloneVolume", {
        configurable: true,
        value: async (...args: Parameters<typeof clone>) => {
          cloning();
          await gate;
          return clone(...args);
        },
      });
      assert.equal((await backend.imageCache.lookup(file))?.digests.sha256, sha("sha256", images.c), "the library's lookup finds it by the pinned digest");
      const making = backend.createVolumeFromImage(file, { name: "during" });
      await started;
      const during = ok(await s.run(["--json", "image", "cache", "prune", "--all"])).json<CacheListing[]>();
      assert.deepEqual(during, [], "nothing evicted while a clone is being made");
      const [entry] = await s.list();
      assert.equal(entry.inUse, true);
      resume();
      await making;
      assert.deepEqual((await s.contents("during", images.c.length)).bytes, images.c);
    } finally {
      await set.close();
    }
    const [entry] = await s.list();
    assert.equal(entry.inUse, false);
    assert.equal(ok(await s.run(["--json", "image", "cache", "prune", "--all"])).json<CacheListing[]>().length, 1);
  });
});

describe("the image cache with processes asking at once", () => {
  let dir: string;
  const image = diskImage();
  let gets = 0;
  // Every GET waits for the gate; a test opens it with release() and may close a new one.
  let release!: () => void;
  let released!: Promise<void>;
  const closeGate = () => (released = new Promise<void>((resolve) => (release = resolve)));
  closeGate();
  let server: http.Server;
  let url: string;

  before(async () => {
    dir = tempDir("kindling-image-cache-race-");
    // Answers HEAD at once and holds the rest of every GET after its first 2 MiB until the test
    // lets it go: the first process is then certainly mid-fill when the second one asks.
    server = http.createServer((req, res) => {
      const headers = { "content-length": String(image.length), "accept-ranges": "bytes", etag: '"one"' };
      if (req.method === "HEAD") return void res.writeHead(200, headers).end();
      gets++;
      // The head at once (the image is inspected, its volume made), the rest once let go.
      res.writeHead(200, headers).write(image.subarray(0, 2 * MiB));
      void released.then(() => res.end(image.subarray(2 * MiB)));
      res.on("error", () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/disk.raw`;
  });

  after(async () => {
    release();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    removeDir(dir);
  });

  /** A kindling process whose stderr can be watched while it runs. */
  const start = (config: string, args: string[]) => {
    const child = spawn(KINDLING, ["--config", config, ...args], { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", KINDLING_LOG_LEVEL: "info" }, detached: true });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const done = new Promise<CliResult>((resolve) => child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr, json: () => JSON.parse(stdout) })));
    return { done, stderr: () => stderr, child };
  };
  const until = async (what: string, check: () => boolean) => {
    for (let i = 0; !check(); i++) {
      if (i > 600) throw new Error(`gave up waiting for ${what}`);
      await sleep(100);
    }
  };

  const configFor = (name: string) => {
    const config = join(dir, `${name}.json`);
    writeFileSync(config, JSON.stringify({ backends: { local: { driver: "file", path: join(dir, name) } }, imageCache: { maxSizeGiB: 10 } }));
    return config;
  };

  test("two processes asking for one image download it once: the second waits for the first's fill, then clones", async () => {
    gets = 0;
    closeGate();
    const config = configFor("together");
    const digest = sha("sha256", image);
    const first = start(config, ["--json", "volume", "create", "first", "--image", url, "--sha256", digest]);
    await until("the first process's download", () => gets === 1);
    const second = start(config, ["--json", "volume", "create", "second", "--image", url, "--sha256", digest]);
    await until("the second process to wait", () => second.stderr().includes('"event":"image.cache.wait"'));
    release();
    const [a, b] = await Promise.all([first.done, second.done]);
    ok(a);
    ok(b);
    assert.equal(gets, 1, "one download for both");
    const set = await openBackends(loadConfig({ path: config }));
    try {
      for (const name of ["first", "second"]) assert.deepEqual(await readAt(await set.get().getVolume(name), image.length), image, name);
      const entries = await set.get().imageCache.list();
      assert.equal(entries.length, 1);
      assert.equal(entries[0].uses, 2);
    } finally {
      await set.close();
    }
  });

  test("a process killed mid-fill leaves nothing in the way: the next one clears its leftovers and fills anew", async () => {
    gets = 0;
    closeGate();
    const config = configFor("killed");
    const digest = sha("sha256", image);
    const first = start(config, ["volume", "create", "first", "--image", url, "--sha256", digest]);
    const volumeFiles = () => (existsSync(join(dir, "killed")) ? readdirSync(join(dir, "killed")).filter((f) => f.startsWith("volume-")) : []);
    await until("the first process's cached volume", () => gets === 1 && volumeFiles().length === 1);
    const halfMade = volumeFiles()[0];
    // Mid-fill: its entry records it as the filler, its cached volume exists, half written.
    process.kill(-(first.child.pid as number), "SIGKILL");
    await first.done;
    release();
    const second = start(config, ["--json", "volume", "create", "second", "--image", url, "--sha256", digest]);
    ok(await second.done);
    assert.equal(gets, 2, "the second process downloads again: nothing of the first's fill was trusted");
    const set = await openBackends(loadConfig({ path: config }));
    try {
      const backend = set.get();
      assert.deepEqual(await readAt(await backend.getVolume("second"), image.length), image);
      const entries = await backend.imageCache.list();
      assert.equal(entries.length, 1);
      assert.equal(entries[0].state, "ready");
      assert.deepEqual((await backend.volumes()).map((v) => v.name), ["second"]);
      assert.ok(!volumeFiles().includes(halfMade), "the half-written cached volume is gone");
      assert.deepEqual(volumeFiles().sort(), [`volume-${entries[0].volumeId}`, `volume-${(await backend.getVolume("second")).id}`].sort());
    } finally {
      await set.close();
    }
  });
});

describe("the image cache and Glance", { skip: glanceMissing() }, () => {
  let dir: string;
  let glance: GlanceServer;
  let client: GlanceImageService;
  let server: ImageServer;
  const image = diskImage();
  const auth = { type: "noauth", projectId: "99887766554433221100", userId: "u" };

  before(async () => {
    dir = tempDir("kindling-image-cache-glance-");
    mkdirSync(join(dir, "www"));
    writeFileSync(join(dir, "www", "same.raw"), image);
    server = await startImageServer(join(dir, "www"));
    glance = await GlanceServer.start();
    client = glanceImageService("glance", { type: "glance", endpoint: glance.endpoint, auth });
  });

  after(async () => {
    client?.close();
    glance?.stop();
    await server?.close();
    removeDir(dir);
  });

  test("a metadata edit in Glance still hits; a URL pinned to the same bytes shares the entry without a request", async () => {
    const config = join(dir, "kindling.json");
    writeFileSync(config, JSON.stringify({ backends: { local: { driver: "file", path: join(dir, "volumes") } }, imageServices: { glance: { type: "glance", endpoint: glance.endpoint, auth } }, imageCache: { maxSizeGiB: 10 } }));
    const run = (args: string[]) => kindlingAsync(["--config", config, ...args], { env: { XDG_DATA_HOME: join(dir, "data") } });
    const made = await client.create({ name: "golden", diskFormat: "raw" });
    await client.upload(made.id, Readable.from([image]));
    ok(await run(["volume", "create", "g1", "--image", "glance:golden"]));
    // Glance bumps updated_at on any edit (what evicts Cinder's cache); the bytes stay the same.
    await client.update(made.id, { set: { name: "golden-renamed", properties: { os_distro: "debian" } } });
    // Without its data a download from Glance would fail: a hit does not download.
    const data = join(glance.imagesDir, made.id);
    assert.ok(existsSync(data));
    renameSync(data, `${data}.away`);
    try {
      ok(await run(["volume", "create", "g2", "--image", "glance:golden-renamed"]));
    } finally {
      renameSync(`${data}.away`, data);
    }
    server.seen.length = 0;
    ok(await run(["volume", "create", "u1", "--image", `${server.url}/same.raw`, "--sha256", sha("sha256", image)]));
    assert.deepEqual(server.seen, [], "the entry Glance's sha512 filled is found by the URL's sha256");
    const entries = ok(await run(["--json", "image", "cache", "list"])).json<CacheListing[]>();
    assert.equal(entries.length, 1);
    assert.equal(entries[0].uses, 3);
    const set = await openBackends(loadConfig({ path: config }));
    try {
      for (const name of ["g1", "g2", "u1"]) assert.deepEqual(await readAt(await set.get().getVolume(name), image.length), image, name);
    } finally {
      await set.close();
    }
  });
});

describe("the image cache on rbd", { skip: cephMissing() }, () => {
  let cluster: CephCluster;
  let dir: string;
  let config: string;
  const image = diskImage();

  before(async () => {
    cluster = await CephCluster.start(["volumes"]);
    dir = tempDir("kindling-image-cache-rbd-");
    writeFileSync(join(dir, "disk.raw"), image);
    const entry: Record<string, unknown> = { ...cluster.backend("ceph"), persistence: { storage: "sqlite", path: join(dir, "records.db") } };
    delete entry.name;
    config = join(dir, "kindling.json");
    writeFileSync(config, JSON.stringify({ backends: { ceph: entry }, imageCache: { maxSizeGiB: 10 } }));
  });

  after(() => {
    cluster?.stop();
    if (dir) removeDir(dir);
  });

  test("a volume is an rbd clone of the cached image, which stays while the clone depends on it", async () => {
    const run = (args: string[]) => kindlingAsync(["--config", config, ...args]);
    const ref = [`file:${join(dir, "disk.raw")}`, "--sha256", sha("sha256", image)];
    const v = ok(await run(["--json", "volume", "create", "boot", "--image", ...ref, "--size", "2"])).json<{ id: string; sizeGiB: number }>();
    assert.equal(v.sizeGiB, 2);
    const [entry] = ok(await run(["--json", "image", "cache", "list"])).json<CacheListing[]>();
    const info = cluster.rbdJson<{ parent?: { image: string }; size: number }>(["info", `volumes/volume-${v.id}`]);
    assert.equal(info.parent?.image, `volume-${entry.volumeId}`, "a copy-on-write clone of the cached image");
    assert.equal(info.size, 2 * 1024 ** 3, "grown to the size asked");
    const set = await openBackends(loadConfig({ path: config }));
    try {
      assert.deepEqual(await readAt(await set.get().getVolume("boot"), image.length), image);
    } finally {
      await set.close();
    }
    const kept = ok(await run(["--json", "image", "cache", "prune", "--all"])).json<CacheListing[]>();
    assert.deepEqual(kept, [], "a clone depends on it");
    const [inUse] = ok(await run(["--json", "image", "cache", "list"])).json<CacheListing[]>();
    assert.equal(inUse.dependents, 1);
    assert.equal(inUse.inUse, true);
    ok(await run(["volume", "delete", "boot"]));
    assert.equal(ok(await run(["--json", "image", "cache", "prune", "--all"])).json<CacheListing[]>().length, 1);
    const images = cluster.rbdJson<string[]>(["ls", "volumes"]);
    assert.deepEqual(images, [], "the cached image went with its entry");
  });
});
