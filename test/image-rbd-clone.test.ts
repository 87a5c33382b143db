// Glance images kept in the rbd backend's own Ceph cluster become copy-on-write clones, not
// copies (Cinder's clone_image), on a real Ceph (scripts/ceph/up.sh, pools volumes and images)
// and a real Glance whose store is rbd (scripts/glance/up.sh with GLANCE_RBD_*): the volume's
// parent is Glance's snapshot, its bytes are the image's, a larger size is honoured, and the
// clone is read back through the image's digests and the inspector, so a clone whose bytes are
// not the image's (or not raw) is refused with nothing left. Images elsewhere (Glance's file
// store, another cluster's fsid, a backend user who cannot read Glance's pool) are copied as
// ever; read-only access to that pool (Cinder's recommended caps) is enough to clone. Deleting
// the volume leaves Glance's image; Glance refuses to delete an image while a clone of it lasts.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { writeFileSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import type { ImageRecord } from "../provider/images/contract";
import { IntegrityError } from "../provider/images/digest";
import { glanceImageService, type GlanceImageService } from "../provider/images/glance";
import { GlanceSource } from "../provider/images/sources/glance";
import type { ImageSource } from "../provider/images/sources/source";
import { parseRbdLocation } from "../provider/drivers/rbd/driver";
import { Backend, type BackendConfig } from "../provider/library";
import { MemoryPersistence } from "../provider/persistence/memory";
import { ConflictError, InvalidInputError } from "../provider/util/errors";
import { readAt } from "./helpers/backends";
import { CephCluster, cephMissing } from "./helpers/ceph";
import { removeDir, tempDir } from "./helpers/env";
import { GlanceServer, glanceMissing } from "./helpers/glance";

const skip = cephMissing() ?? glanceMissing();
const MiB = 1 << 20;
const GiB = 1 << 30;
const sha512 = (b: Buffer) => createHash("sha512").update(b).digest("hex");
/** Data, a run of zeroes, data, not a whole number of MiB: what a disk image looks like; each call other bytes. */
const diskImage = () => Buffer.concat([randomBytes(MiB + 512), Buffer.alloc(2 * MiB), randomBytes(MiB)]);

test("rbd:// locations: four URL-quoted names, nothing else", () => {
  assert.deepEqual(parseRbdLocation("rbd://f5a1/images/0b1c/snap"), { fsid: "f5a1", pool: "images", image: "0b1c", snapshot: "snap" });
  assert.deepEqual(parseRbdLocation("rbd://f5a1/my%2Dpool/img/snap")?.pool, "my-pool", "parts are URL-unquoted, as glance_store quotes them");
  for (const url of ["rbd://f5a1/images/0b1c", "rbd://f5a1/images/0b1c/snap/x", "rbd://f5a1//0b1c/snap", "rbd://f5a1/images/--help/snap", "rbd://f5a1/images/a%2Fb/snap", "rbd://f5a1/images/%zz/snap", "file:///var/lib/glance/images/0b1c", "http://x/y"]) {
    assert.equal(parseRbdLocation(url), undefined, url);
  }
});

interface RbdInfo {
  size: number;
  parent?: { pool: string; image: string; snapshot: string };
}

describe("Glance images on rbd in the backend's cluster are cloned, not copied", { skip }, () => {
  let cluster: CephCluster;
  let glance: GlanceServer;
  let fileGlance: GlanceServer;
  let client: GlanceImageService;
  let fileClient: GlanceImageService;
  let backend: Backend;
  let dir: string;
  let fsid: string;
  const auth = { type: "noauth", projectId: "00112233445566778899aabbccddeeff", userId: "u" };

  before(async () => {
    dir = tempDir("kindling-rbd-clone-");
    cluster = await CephCluster.start(["volumes", "images"]);
    fsid = JSON.parse(cluster.admin("ceph", ["fsid", "--format", "json"])).fsid;
    // Glance as Cinder's deployments run it: its own Ceph user (admin here), its own pool.
    glance = await GlanceServer.start({ rbd: { conf: cluster.conf, keyring: join(cluster.dir, "keyring"), user: "admin", pool: "images" } });
    fileGlance = await GlanceServer.start();
    client = glanceImageService("glance", { type: "glance", endpoint: glance.endpoint, auth });
    fileClient = glanceImageService("files", { type: "glance", endpoint: fileGlance.endpoint, auth });
    // The image cache is on: the clone is taken before it (the cache stays empty).
    backend = await Backend.open(cluster.backend("ceph") as unknown as BackendConfig, { persistence: new MemoryPersistence(), imageCache: { maxSizeGiB: 10 } });
  });

  after(async () => {
    await backend?.close().catch(() => undefined);
    client?.close();
    fileClient?.close();
    glance?.stop();
    fileGlance?.stop();
    if (cluster) {
      cluster.stop();
      removeDir(dirname(cluster.dir));
    }
    if (dir) removeDir(dir);
  });

  const upload = async (service: GlanceImageService, name: string, bytes: Buffer, extra: { minDiskGiB?: number } = {}): Promise<ImageRecord> => {
    const made = await service.create({ name, diskFormat: "raw", ...extra });
    return (await service.upload(made.id, Readable.from([bytes]))).image;
  };
  const source = async (service: GlanceImageService, id: string): Promise<ImageSource> => new GlanceSource(service, await service.show(id));
  const info = (spec: string) => cluster.rbdJson<RbdInfo>(["info", spec]);
  const volumesInPool = () => cluster.rbdJson<string[]>(["ls", "volumes"]);
  /** Downloads of the image's data from the rbd Glance, as its request log shows them. */
  const downloadsOf = (id: string) => readFileSync(join(glance.dir, "log", "glance-api.log"), "utf8").split("\n").filter((l) => l.includes(`"GET /v2/images/${id}/file `)).length;

  test("the volume is an rbd clone of Glance's snapshot, holds the image's bytes, and records where it came from", async () => {
    const bytes = diskImage();
    const image = await upload(client, "golden", bytes);
    assert.equal(image.directUrl, `rbd://${fsid}/images/${image.id}/snap`, "Glance keeps it in the cluster's images pool");
    const volume = await backend.createVolumeFromImage(await source(client, image.id), { name: "cloned" });
    const rbd = info(`volumes/volume-${volume.id}`);
    assert.deepEqual(rbd.parent && { pool: rbd.parent.pool, image: rbd.parent.image, snapshot: rbd.parent.snapshot }, { pool: "images", image: image.id, snapshot: "snap" });
    assert.equal(volume.sizeGiB, 1, "the size the image needs");
    assert.equal(rbd.size, GiB, "the clone grew from the image's size to the volume's");
    assert.ok((await readAt(volume, bytes.length)).equals(bytes), "the volume holds the image's bytes");
    assert.ok((await readAt(volume, MiB, bytes.length)).equals(Buffer.alloc(MiB)), "zeroes past the image");
    const provenance = volume.image;
    assert.equal(provenance?.clonedFrom, image.directUrl);
    assert.equal(provenance?.imageId, image.id);
    assert.equal(provenance?.detectedFormat, "raw");
    assert.equal(provenance?.digests.sha512, sha512(bytes), "Glance's os_hash_value, checked on the clone");
    assert.equal(provenance?.digests.md5, createHash("md5").update(bytes).digest("hex"), "and its checksum");
    assert.deepEqual(await backend.imageCache.list(), [], "the clone passed the image cache by");
    assert.equal(downloadsOf(image.id), 0, "nothing was downloaded from Glance");
    await volume.delete();
  });

  test("a larger size is honoured; a size below min_disk is refused before anything is made", async () => {
    const bytes = diskImage();
    const image = await upload(client, "roomy", bytes, { minDiskGiB: 2 });
    await assert.rejects(backend.createVolumeFromImage(await source(client, image.id), { name: "small", sizeGiB: 1 }), (err: unknown) => err instanceof InvalidInputError && /at least 2 GiB/.test(err.message));
    assert.deepEqual(volumesInPool(), []);
    const volume = await backend.createVolumeFromImage(await source(client, image.id), { name: "roomy", sizeGiB: 3 });
    const rbd = info(`volumes/volume-${volume.id}`);
    assert.equal(rbd.parent?.image, image.id);
    assert.equal(volume.sizeGiB, 3);
    assert.equal(rbd.size, 3 * GiB);
    assert.ok((await readAt(volume, bytes.length)).equals(bytes));
    await volume.delete();
  });

  test("an image on Glance's file store, or in another cluster, is copied the usual way", async () => {
    const bytes = diskImage();
    const onFiles = await upload(fileClient, "on-files", bytes);
    assert.match(onFiles.directUrl ?? "", /^file:\/\//);
    // Without the image cache (on in this backend), whose clones of its own would hide the copy.
    const copied = await backend.createVolumeFromImage(await source(fileClient, onFiles.id), { name: "from-files" }, { imageCache: false });
    assert.equal(info(`volumes/volume-${copied.id}`).parent, undefined, "a copy, not a clone");
    assert.ok((await readAt(copied, bytes.length)).equals(bytes));
    assert.equal(copied.image?.clonedFrom, undefined);
    await copied.delete();

    // The same Glance, its image's location naming another cluster (another fsid): never cloned.
    const image = await upload(client, "elsewhere", bytes);
    const real = await source(client, image.id);
    const other = `rbd://00000000-1111-2222-3333-444444444444/images/${image.id}/snap`;
    const elsewhere: ImageSource = {
      describe: async () => ({ ...(await real.describe()), locations: [other] }),
      open: (opts) => real.open(opts),
    };
    const copy = await backend.createVolumeFromImage(elsewhere, { name: "from-elsewhere" }, { imageCache: false });
    assert.equal(info(`volumes/volume-${copy.id}`).parent, undefined, "another cluster's image is copied");
    assert.ok(downloadsOf(image.id) >= 1, "downloaded from Glance");
    assert.ok((await readAt(copy, bytes.length)).equals(bytes));
    await copy.delete();
    assert.deepEqual(volumesInPool(), []);
  });

  test("read-only access to Glance's pool is enough to clone (Cinder's caps); with none the image is copied", async () => {
    const bytes = diskImage();
    const image = await upload(client, "shared", bytes);
    const userBackend = async (user: string, osdCaps: string) => {
      const key = cluster.admin("ceph", ["auth", "get-or-create-key", `client.${user}`, "mon", "profile rbd", "osd", osdCaps]).trim();
      return Backend.open({ ...cluster.backend(`as-${user}`), user, key } as unknown as BackendConfig, { persistence: new MemoryPersistence() });
    };
    const reader = await userBackend("reader", "profile rbd pool=volumes, profile rbd-read-only pool=images");
    try {
      const volume = await reader.createVolumeFromImage(await source(client, image.id), { name: "by-reader" });
      assert.equal(info(`volumes/volume-${volume.id}`).parent?.image, image.id, "cloned");
      assert.ok((await readAt(volume, bytes.length)).equals(bytes));
      await volume.delete();
    } finally {
      await reader.close();
    }
    const stranger = await userBackend("stranger", "profile rbd pool=volumes");
    try {
      const volume = await stranger.createVolumeFromImage(await source(client, image.id), { name: "by-stranger" });
      assert.equal(info(`volumes/volume-${volume.id}`).parent, undefined, "copied: this user cannot read Glance's pool");
      assert.ok((await readAt(volume, bytes.length)).equals(bytes));
      await volume.delete();
    } finally {
      await stranger.close();
    }
    assert.deepEqual(volumesInPool(), []);
  });

  test("a clone whose bytes are not the image's os_hash_value is refused, and nothing is left", async () => {
    const bytes = diskImage();
    const image = await upload(client, "tampered", bytes);
    // Behind Glance's back: other bytes in its image, and its snapshot taken again over them.
    const spec = `images/${image.id}`;
    const other = join(dir, "other.raw");
    const changed = Buffer.from(bytes);
    changed.fill(0x5a, 0, 4096);
    writeFileSync(other, changed);
    cluster.admin("rbd", ["snap", "unprotect", `${spec}@snap`]);
    cluster.admin("rbd", ["snap", "rm", "--no-progress", `${spec}@snap`]);
    cluster.admin("rbd", ["rm", "--no-progress", spec]);
    cluster.admin("rbd", ["import", "--no-progress", other, spec]);
    cluster.admin("rbd", ["snap", "create", "--no-progress", `${spec}@snap`]);
    cluster.admin("rbd", ["snap", "protect", `${spec}@snap`]);
    await assert.rejects(backend.createVolumeFromImage(await source(client, image.id), { name: "tampered" }), (err: unknown) => {
      assert.ok(err instanceof IntegrityError, String(err));
      assert.match(err.message, /\(its clone\): its sha512 is [0-9a-f]+, but glance's os_hash_value says/);
      return true;
    });
    assert.deepEqual(volumesInPool(), [], "the clone was deleted");
    assert.deepEqual(await backend.volumes(), [], "and its record");
    assert.deepEqual(cluster.rbdJson<Array<{ image: string }>>(["children", `${spec}@snap`]), [], "Glance's snapshot has no clone left");
  });

  test("a clone of an image declared raw whose bytes are qcow2 is refused, and nothing is left", async () => {
    const path = join(dir, "not-raw.qcow2");
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", path, "64M"]);
    // Glance zed takes any bytes as raw (it does not inspect uploads).
    const image = await upload(client, "not-raw", readFileSync(path));
    assert.match(image.directUrl ?? "", /^rbd:\/\//);
    await assert.rejects(backend.createVolumeFromImage(await source(client, image.id), { name: "not-raw" }), (err: unknown) => {
      assert.ok(err instanceof InvalidInputError, String(err));
      assert.match(err.message, /declared raw, but its bytes are a qcow2 image/);
      return true;
    });
    assert.deepEqual(volumesInPool(), []);
    assert.deepEqual(await backend.volumes(), []);
  });

  test("deleting the volume leaves Glance's image; Glance refuses to delete an image while a clone of it lasts", async () => {
    const bytes = diskImage();
    const image = await upload(client, "kept", bytes);
    const volume = await backend.createVolumeFromImage(await source(client, image.id), { name: "clone-of-kept" });
    // Glance's rbd store cannot remove a snapshot that has children: the image stays, active.
    await assert.rejects(client.delete(image.id), (err: unknown) => err instanceof ConflictError && /in use/.test(err.message));
    assert.equal((await client.show(image.id)).status, "active");
    assert.ok((await readAt(volume, bytes.length)).equals(bytes), "the clone is untouched");
    await volume.delete();
    assert.deepEqual(volumesInPool(), []);
    const snaps = cluster.rbdJson<Array<{ name: string; protected: string }>>(["snap", "ls", `images/${image.id}`]);
    assert.deepEqual(snaps.map((s) => [s.name, s.protected]), [["snap", "true"]], "Glance's image and its protected snapshot stay as Glance made them");
    const download = await client.download(image.id);
    const chunks: Buffer[] = [];
    for await (const chunk of download.body) chunks.push(chunk as Buffer);
    assert.ok(Buffer.concat(chunks).equals(bytes), "Glance still serves the image");
    // With the clone gone Glance deletes its image as ever.
    await client.delete(image.id);
    assert.deepEqual(cluster.rbdJson<string[]>(["ls", "images"]).filter((i) => i === image.id), []);
  });
});
