// Round trips through a real Glance for every format kindling writes: an image made by
// qemu-img is uploaded, made into a volume (converted where it is not raw), the volume copied
// back to an image of the same format and downloaded: real qemu-img compares what came back
// with what went in. The volume is at least the image's virtual size, larger on request.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { after, before, describe, test } from "node:test";
import { glanceImageService, type GlanceImageService } from "../provider/images/glance";
import type { DiskFormat } from "../provider/images/contract";
import type { Backend } from "../provider/library";
import { ImageServiceSet, imageSourceFor } from "../provider/library/images";
import { fileBackend } from "./helpers/backends";
import { removeDir } from "./helpers/env";
import { GlanceServer, glanceMissing } from "./helpers/glance";

const MiB = 1 << 20;
const GiB = 1 << 30;
/** Each format with the qemu-img options that make it, as a user would have it. */
const FORMATS: Array<{ format: DiskFormat; qemu: string; options?: string[]; compress?: boolean }> = [
  { format: "raw", qemu: "raw" },
  { format: "qcow2", qemu: "qcow2" },
  { format: "qcow2", qemu: "qcow2", compress: true },
  { format: "vmdk", qemu: "vmdk", options: ["subformat=streamOptimized"] },
  { format: "vhdx", qemu: "vhdx" },
  { format: "vdi", qemu: "vdi" },
];

describe("image to volume to image, every format, through Glance", { skip: glanceMissing() }, () => {
  let backend: Backend;
  let dir: string;
  let glance: GlanceServer;
  let client: GlanceImageService;
  let services: ImageServiceSet;
  let raw: string;

  before(async () => {
    ({ backend, dir } = await fileBackend());
    glance = await GlanceServer.start();
    client = glanceImageService("glance", { type: "glance", endpoint: glance.endpoint, auth: { type: "noauth", projectId: "99887766554433221100", userId: "u" } });
    services = new ImageServiceSet(new Map([["glance", client]]));
    // Data, a run of zeroes, data, then nothing to the end of 96 MiB: a disk, not a file.
    raw = join(dir, "disk.raw");
    writeFileSync(raw, Buffer.concat([randomBytes(3 * MiB), Buffer.alloc(5 * MiB), randomBytes(2 * MiB + 4096)]));
    execFileSync("truncate", ["-s", String(96 * MiB), raw]);
  });
  after(() => {
    client?.close();
    glance?.stop();
    void backend?.close();
    removeDir(dir);
  });

  for (const [i, f] of FORMATS.entries()) {
    const label = `${f.format}${f.compress ? " (compressed)" : ""}${f.options ? ` ${f.options.join(",")}` : ""}`;
    test(label, async () => {
      const image = join(dir, `in-${i}.${f.qemu}`);
      execFileSync("qemu-img", ["convert", "-q", "-f", "raw", "-O", f.qemu, ...(f.compress ? ["-c"] : []), ...(f.options ?? []).flatMap((o) => ["-o", o]), raw, image]);
      const uploaded = await client.create({ name: `in-${i}`, diskFormat: f.format });
      await client.upload(uploaded.id, createReadStream(image));

      const volume = await backend.createVolumeFromImage(await imageSourceFor(`glance:${uploaded.id}`, services), { name: `vol-${i}` });
      assert.equal(volume.sizeGiB, 1, "the size the image needs (96 MiB rounds up to 1 GiB)");
      assert.equal(volume.image?.detectedFormat, f.format === "raw" ? "raw" : f.format);
      const larger = await backend.createVolumeFromImage(await imageSourceFor(`glance:${uploaded.id}`, services), { name: `vol-${i}-big`, sizeGiB: 2 });
      assert.equal(larger.sizeGiB, 2, "larger on request");
      const compare = (file: string, format: string) => spawnSync("qemu-img", ["compare", "-f", "raw", "-F", format, raw, file], { encoding: "utf8" });
      // The volume holds the image's disk (then zeroes to its end: compare checks the longer side is zero).
      const held = compare(volume.location as string, "raw");
      assert.equal(held.status, 0, `the volume holds the image: ${held.stdout}${held.stderr}`);

      const back = await volume.copyToImage(client, { name: `out-${i}`, diskFormat: f.format as "raw" | "qcow2" | "vmdk" | "vhdx" | "vdi", compress: f.compress });
      assert.equal(back.image.status, "active");
      assert.equal(back.image.diskFormat, f.format);
      const out = join(dir, `out-${i}.${f.qemu}`);
      await pipeline((await client.download(back.image.id)).body, createWriteStream(out));
      const info = JSON.parse(execFileSync("qemu-img", ["info", "--output=json", "-f", f.qemu, out], { encoding: "utf8" })) as { "virtual-size": number };
      assert.equal(info["virtual-size"], GiB, "the image back is the volume's size");
      const same = compare(out, f.qemu);
      assert.equal(same.status, 0, `what came back is what went in: ${same.stdout}${same.stderr}`);
      for (const v of [volume, larger]) await v.delete();
      for (const id of [uploaded.id, back.image.id]) await client.delete(id);
    });
  }
});
