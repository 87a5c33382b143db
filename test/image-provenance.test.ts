// A volume made from an image records where it came from (Cinder's volume_glance_metadata and
// more): the service, image id and name and properties of a Glance image, or the file; what
// the image declared and what kindling found; every digest that was checked. Its snapshots,
// its clones and volumes made from those carry it on, and it is kept in the records (a new
// process sees it).
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { Backend } from "../provider/library";
import { ImageServiceSet, imageSourceFor } from "../provider/library/images";
import { glanceImageService, type GlanceImageService } from "../provider/images/glance";
import { SqlitePersistence } from "../provider/persistence/sqlite";
import { fileBackend } from "./helpers/backends";
import { removeDir } from "./helpers/env";
import { GlanceServer, needsGlance, glanceMissing } from "./helpers/glance";

const MiB = 1 << 20;
const sha = (algo: string, b: Buffer) => createHash(algo).update(b).digest("hex");

describe("image provenance of volumes", () => {
  let backend: Backend;
  let dir: string;
  let glance: GlanceServer | undefined;
  let client: GlanceImageService | undefined;
  const image = Buffer.concat([randomBytes(MiB), Buffer.alloc(MiB), randomBytes(4096)]);
  const noServices = new ImageServiceSet(new Map());

  before(async () => {
    ({ backend, dir } = await fileBackend("sqlite"));
    writeFileSync(join(dir, "disk.raw"), image);
    if (!glanceMissing()) {
      glance = await GlanceServer.start();
      client = glanceImageService("glance", { type: "glance", endpoint: glance.endpoint, auth: { type: "noauth", projectId: "99887766554433221100", userId: "u" } });
    }
  });
  after(async () => {
    await backend.close();
    client?.close();
    glance?.stop();
    removeDir(dir);
  });

  test("a volume from a file records the file, the format found and the digest checked, and passes it on", async () => {
    const path = join(dir, "disk.raw");
    const source = await imageSourceFor(`file:${path}`, noServices, { sha256: sha("sha256", image) });
    const volume = await backend.createVolumeFromImage(source, { name: "from-file" });
    const p = volume.image;
    assert.ok(p, "the volume records its image");
    assert.equal(p.kind, "file");
    assert.equal(p.location, path);
    assert.equal(p.detectedFormat, "raw");
    assert.equal(p.sizeBytes, image.length);
    assert.equal(p.virtualSizeBytes, image.length);
    assert.deepEqual(p.digests, { sha256: sha("sha256", image) });

    const snapshot = await volume.createSnapshot({ name: "from-file-snap" });
    assert.deepEqual(snapshot.image, p, "the snapshot carries it");
    const fromSnapshot = await snapshot.createVolume({ name: "from-file-snap-vol" });
    assert.deepEqual(fromSnapshot.image, p, "a volume from the snapshot carries it");
    const clone = await volume.clone({ name: "from-file-clone" });
    assert.deepEqual(clone.image, p, "a clone carries it");
    const plain = await backend.createVolume({ name: "plain", sizeGiB: 1 });
    assert.equal(plain.image, undefined, "a volume not made from an image records none");

    // Another process's view: a new backend over the same records.
    const again = await Backend.open({ name: "test", driver: "file", path: join(dir, "volumes") }, { persistence: new SqlitePersistence(join(dir, "records", "kindling.db")) });
    try {
      assert.deepEqual((await again.getVolume("from-file-clone")).image, p);
      assert.deepEqual((await again.getSnapshot("from-file-snap")).image, p);
    } finally {
      await again.close();
    }
  });

  test("a volume from a Glance image records the service, the image and its properties", async (t) => {
    if (needsGlance(t)) return;
    const made = await (client as GlanceImageService).create({ name: "golden", diskFormat: "raw", minDiskGiB: 2, properties: { os_distro: "debian", hw_disk_bus: "virtio" } });
    await (client as GlanceImageService).upload(made.id, Readable.from([image]));
    const services = new ImageServiceSet(new Map([["glance", client as GlanceImageService]]));
    const volume = await backend.createVolumeFromImage(await imageSourceFor("glance:golden", services), { name: "from-glance" });
    const p = volume.image;
    assert.ok(p);
    assert.equal(p.kind, "glance");
    assert.equal(p.service, "glance");
    assert.equal(p.imageId, made.id);
    assert.equal(p.imageName, "golden");
    assert.equal(p.declaredFormat, "raw");
    assert.equal(p.containerFormat, "bare");
    assert.equal(p.minDiskGiB, 2);
    assert.equal(volume.sizeGiB, 2, "min_disk sized the volume");
    assert.equal(p.properties.os_distro, "debian");
    assert.equal(p.properties.hw_disk_bus, "virtio");
    assert.deepEqual(p.digests, { sha512: sha("sha512", image), md5: sha("md5", image) }, "Glance's os_hash_value and checksum, both checked");
    const snapshot = await volume.createSnapshot({ name: "from-glance-snap" });
    assert.equal(snapshot.image?.imageId, made.id);
  });
});
