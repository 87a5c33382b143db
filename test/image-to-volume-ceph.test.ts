// Images into volumes of the backends qemu-img does not reach through a file, on a real Ceph
// (scripts/ceph/up.sh, with radosgw): the rbd driver's own way (qemu-img writes into and reads
// from the rbd image with librbd, the key as a secret object read from a file) for each format,
// one round trip each (image to volume to image, compared by qemu-img); and an object backend
// (radosgw's S3), which qemu-img reaches over kindling's NBD server.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { S3Store } from "../provider/drivers/object/s3";
import { convertArgs, qemuImgConvert } from "../provider/images/qemu-convert";
import { qemuEndpoint } from "../provider/images/qemu-endpoint";
import { Backend, type BackendConfig } from "../provider/library";
import { MemoryPersistence } from "../provider/persistence/memory";
import { readAt } from "./helpers/backends";
import { CephCluster, cephMissing } from "./helpers/ceph";
import { removeDir, tempDir } from "./helpers/env";
import { buildFormats, diskContent, type FormatCase } from "./helpers/image-corpus";

const skip = cephMissing();
const MiB = 1 << 20;

describe("images into rbd and object volumes on a real Ceph", { skip }, () => {
  let cluster: CephCluster;
  let dir: string;
  let formats: FormatCase[];
  const raw = diskContent();
  const opened: Backend[] = [];
  const staging = () => join(dir, "staging");

  before(async () => {
    dir = tempDir("kindling-image-ceph-");
    mkdirSync(join(dir, "images"));
    writeFileSync(join(dir, "images", "disk.raw"), raw);
    formats = buildFormats(join(dir, "images"), join(dir, "images", "disk.raw"));
    cluster = await CephCluster.start(["volumes"], { rgw: true });
  });
  after(async () => {
    for (const b of opened) await b.close().catch(() => undefined);
    if (cluster) {
      cluster.stop();
      removeDir(dirname(cluster.dir));
    }
    removeDir(dir);
  });

  test("rbd: each format into a volume through librbd, and back out of its snapshot to the same bytes", async () => {
    const backend = await Backend.open(cluster.backend("ceph") as unknown as BackendConfig, { persistence: new MemoryPersistence() });
    opened.push(backend);
    const wanted = ["qcow2", "vmdk streamOptimized", "vmdk monolithicSparse", "vpc (vhd dynamic)", "vhdx", "vdi", "zstd of qcow2"];
    for (const image of formats.filter((f) => wanted.includes(f.name))) {
      const volume = await backend.createVolume({ name: `rbd-${wanted.indexOf(image.name)}`, image: `file:${image.path}`, allowUnverified: true }, { stagingDir: staging() });
      assert.equal(volume.sizeGiB, 1);
      assert.ok((await readAt(volume, raw.length)).equals(raw), `${image.name}: the rbd image holds the disk`);
      // Out again, from a snapshot, the same way: qemu-img reads the rbd snapshot itself.
      const snapshot = await volume.createSnapshot({ name: `snap-${wanted.indexOf(image.name)}` });
      const endpoint = await qemuEndpoint(backend.driver, { kind: "snapshot", snapshot: snapshot.toDriver() }, { readOnly: true });
      const back = join(dir, "back.qcow2");
      try {
        assert.equal(endpoint.via, "rbd");
        assert.match(endpoint.imageOpts, /file\.snapshot=snapshot-/);
        const args = convertArgs({ endpoint }, { path: back, format: "qcow2" });
        assert.ok(!args.join(" ").includes(cluster.key), "the key is never on qemu-img's command line");
        assert.ok(args.some((a) => /^secret,id=kindling-rbd-key,file=\//.test(a)), "it reaches qemu-img as a secret object read from a file");
        await qemuImgConvert({ endpoint }, { path: back, format: "qcow2" });
      } finally {
        await endpoint.close();
      }
      const source = image.path.endsWith(".zst") ? join(dir, "inner.qcow2") : image.path;
      if (source !== image.path) writeFileSync(source, execFileSync("zstd", ["-dc", image.path], { maxBuffer: 64 * MiB }));
      // The snapshot is the volume's 1 GiB: compare reads the image's missing tail as zeroes.
      const out = execFileSync("qemu-img", ["compare", "-f", image.qemuFormat, "-F", "qcow2", source, back]).toString();
      assert.match(out, /Images are identical/, image.name);
      await snapshot.delete();
      await volume.delete();
    }
    assert.deepEqual(cluster.rbdJson<string[]>(["ls", "volumes"]), [], "every rbd image is gone");
  });

  test("object (radosgw S3): a qcow2 into a volume over kindling's NBD server", async () => {
    const rgw = cluster.rgw;
    assert.ok(rgw);
    const bucket = `kindling-img-${process.pid}`;
    await new S3Store({ endpoint: rgw.endpoint, bucket, region: "us-east-1", accessKey: rgw.accessKey, secretKey: rgw.secretKey, timeoutMs: 30_000 }).createContainer();
    const secretKeyFile = join(dir, "s3-secret");
    writeFileSync(secretKeyFile, rgw.secretKey, { mode: 0o600 });
    const backend = await Backend.open(
      { name: "objects", driver: "object", api: "s3", endpoint: rgw.endpoint, bucket, accessKey: rgw.accessKey, secretKeyFile, cacheDir: join(dir, "object-cache") } as BackendConfig,
      { persistence: new MemoryPersistence() },
    );
    opened.push(backend);
    assert.equal(backend.driver.qemuAccess, undefined, "the object driver has no way of its own for qemu-img");
    const image = formats.find((f) => f.name === "qcow2 compressed") as FormatCase;
    const volume = await backend.createVolume({ name: "from-qcow2", image: `file:${image.path}`, allowUnverified: true }, { stagingDir: staging() });
    assert.ok((await readAt(volume, raw.length + MiB)).equals(Buffer.concat([raw, Buffer.alloc(MiB)])), "the object volume holds the disk, zeroes after it");
    await volume.delete();
  });
});
