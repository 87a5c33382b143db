// Volumes and snapshots of the file backend copied to images of every format in a real Glance,
// then downloaded and compared with the volume's bytes by real qemu-img: raw is streamed,
// qcow2 (plain and compressed), vmdk (streamOptimized), vhdx and vdi are converted by qemu-img
// and checked before they go up. An in-use volume goes through a temporary snapshot that is
// gone afterwards; a staging directory that cannot be written, a full one and a Glance that
// refuses the upload midway each leave no image, no staging file and no snapshot; a Glance
// killed midway leaves no snapshot.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { after, before, describe, test } from "node:test";
import type { Progress } from "../provider/drivers/contract";
import type { ImageService } from "../provider/images/contract";
import { glanceImageService, type GlanceImageService } from "../provider/images/glance";
import type { Backend, Volume } from "../provider/library";
import { NoSpaceError } from "../provider/util/errors";
import { fileBackend, writeAt } from "./helpers/backends";
import { needsRoot, removeDir } from "./helpers/env";
import { GlanceServer, glanceMissing } from "./helpers/glance";

const PROJECT = "00112233445566778899aabbccddeeff";
const MiB = 1 << 20;
const GiB = 1024 * MiB;

async function download(service: ImageService, id: string, file: string): Promise<void> {
  await pipeline((await service.download(id)).body, createWriteStream(file));
}

/** `qemu-img compare` of the volume's pool file (raw) with an image file: identical contents or an error. */
function sameBytes(volumeFile: string, image: string, format: string): void {
  const r = spawnSync("qemu-img", ["compare", "-f", "raw", "-F", format, volumeFile, image], { encoding: "utf8" });
  assert.equal(r.status, 0, `qemu-img compare (${format}): ${r.stdout}${r.stderr}`);
}

function qemuInfo(file: string, format: string): Record<string, unknown> & { "virtual-size": number; format: string } {
  return JSON.parse(execFileSync("qemu-img", ["info", "-f", format, "--output=json", file], { encoding: "utf8" }));
}

describe("volume and snapshot to image, every format", { skip: glanceMissing() }, () => {
  let glance: GlanceServer;
  let client: GlanceImageService;
  let backend: Backend;
  let dir: string;
  let volume: Volume;
  const glanceEntry = (endpoint: string) => ({ type: "glance", endpoint, auth: { type: "noauth", projectId: PROJECT, userId: "to-image" } });

  before(async () => {
    glance = await GlanceServer.start();
    client = glanceImageService("glance", glanceEntry(glance.endpoint));
    ({ backend, dir } = await fileBackend());
    volume = await backend.createVolume({ name: "golden", sizeGiB: 1, metadata: { purpose: "golden", os_glance_x: "1" } });
    // Random data at the start, in the middle (not cluster-aligned) and in the last MiB; holes between.
    await writeAt(volume, randomBytes(2 * MiB), 0);
    await writeAt(volume, randomBytes(MiB + 4096), 300 * MiB + 512);
    await writeAt(volume, randomBytes(MiB), GiB - MiB);
    // And 4 MiB that compress well, so a compressed qcow2 is smaller than a plain one.
    await writeAt(volume, Buffer.from("kindling ".repeat((4 * MiB) / 9 + 1)).subarray(0, 4 * MiB), 600 * MiB);
  });

  after(async () => {
    client?.close();
    glance?.stop();
    await backend?.close();
    if (dir) removeDir(dir);
  });

  const formats: Array<{ diskFormat: "raw" | "qcow2" | "vmdk" | "vhdx" | "vdi"; compress?: boolean; qemu: string }> = [
    { diskFormat: "raw", qemu: "raw" },
    { diskFormat: "qcow2", qemu: "qcow2" },
    { diskFormat: "qcow2", compress: true, qemu: "qcow2" },
    { diskFormat: "vmdk", qemu: "vmdk" },
    { diskFormat: "vhdx", qemu: "vhdx" },
    { diskFormat: "vdi", qemu: "vdi" },
  ];
  for (const f of formats) {
    const label = `${f.diskFormat}${f.compress ? " (compressed)" : ""}`;
    test(`volume -> ${label} image -> download: qemu-img compare finds the volume's bytes; staging removed, no snapshot left`, async () => {
      const staging = join(dir, `staging-${f.diskFormat}${f.compress ? "-c" : ""}`);
      mkdirSync(staging);
      const seen: Progress[] = [];
      const made = await volume.copyToImage(client, { name: `golden-${label}`, diskFormat: f.diskFormat, compress: f.compress, stagingDir: staging, properties: { release: "1" } }, { onProgress: (p) => seen.push(p) });
      assert.equal(made.image.status, "active");
      assert.equal(made.image.diskFormat, f.diskFormat);
      assert.equal(made.image.containerFormat, "bare");
      assert.equal(made.image.minDiskGiB, 1);
      assert.equal(made.image.sizeBytes, made.sentBytes);
      assert.equal(made.image.checksum, made.md5);
      assert.equal(made.image.properties.purpose, "golden", "the volume's metadata is carried over");
      assert.equal(made.image.properties.release, "1");
      assert.equal(made.image.properties.kindling_volume_id, volume.id);
      assert.equal(made.image.properties.os_glance_x, undefined, "a name Glance reserves is not carried over");
      if (f.diskFormat === "raw") assert.equal(made.sentBytes, GiB);
      else assert.ok(made.sentBytes < 64 * MiB, `a sparse ${label} image is small (${made.sentBytes} bytes)`);
      assert.deepEqual(seen.at(-1), { done: GiB, total: GiB }, "progress reached the end");
      assert.ok(seen.every((p, i) => i === 0 || p.done >= seen[i - 1].done), "progress never goes back");

      const file = join(dir, `download.${f.diskFormat}${f.compress ? ".c" : ""}`);
      await download(client, made.image.id, file);
      const info = qemuInfo(file, f.qemu);
      assert.equal(info["virtual-size"], GiB);
      assert.equal(info["backing-filename"], undefined);
      if (f.diskFormat === "vmdk") assert.equal((info["format-specific"] as { data: { "create-type": string } }).data["create-type"], "streamOptimized");
      sameBytes(volume.location as string, file, f.qemu);
      assert.deepEqual(readdirSync(staging), [], "the staging file is gone");
      assert.deepEqual(await volume.snapshots(), [], "the temporary snapshot is gone");
      if (f.compress) {
        const plain = (await client.find({ name: "golden-qcow2" }))[0];
        assert.ok(plain?.sizeBytes !== undefined && made.sentBytes < plain.sizeBytes, `compressed ${made.sentBytes} < plain ${plain?.sizeBytes}`);
      }
    });
  }

  test("a snapshot is copied directly: its bytes, not the volume's newer ones", async () => {
    const snapshot = await volume.createSnapshot({ name: "before" });
    const pristine = join(dir, "pristine.raw");
    await snapshot.download(pristine);
    await writeAt(volume, randomBytes(MiB), 0);
    const made = await snapshot.copyToImage(client, { name: "from-snapshot", diskFormat: "qcow2" });
    assert.equal(made.image.properties.kindling_snapshot_id, snapshot.id);
    const file = join(dir, "from-snapshot.qcow2");
    await download(client, made.image.id, file);
    sameBytes(pristine, file, "qcow2");
    assert.notEqual(spawnSync("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", volume.location as string, file]).status, 0, "the volume has moved on");
    assert.deepEqual((await volume.snapshots()).map((s) => s.name), ["before"], "the snapshot itself stays");
    await snapshot.delete();
  });

  test("an in-use volume goes through a temporary snapshot and is left in use, with no snapshot", async () => {
    const busy = await backend.createVolume({ name: "busy", sizeGiB: 1 });
    await writeAt(busy, randomBytes(MiB), 5 * MiB);
    const connection = await busy.connect("nbd");
    try {
      await busy.refresh();
      assert.equal(busy.status, "in-use");
      const made = await busy.copyToImage(client, { name: "busy-image", diskFormat: "vdi" });
      const file = join(dir, "busy.vdi");
      await download(client, made.image.id, file);
      sameBytes(busy.location as string, file, "vdi");
      assert.deepEqual(await busy.snapshots(), []);
      await busy.refresh();
      assert.equal(busy.status, "in-use");
    } finally {
      await connection.disconnect();
    }
  });

  test("bad options are refused before anything is made", async () => {
    const before = (await client.find({})).length;
    await assert.rejects(volume.copyToImage(client, { name: "x", diskFormat: "vmdk", compress: true }), /compress: only a qcow2 image is compressed/);
    await assert.rejects(volume.copyToImage(client, { name: "x", diskFormat: "qed" as "raw" }), /diskFormat: /);
    assert.equal((await client.find({})).length, before);
    assert.deepEqual(await volume.snapshots(), []);
  });

  test("a staging directory that cannot be written leaves no image, no staging file and no snapshot", async () => {
    const before = (await client.find({})).map((i) => i.id);
    const notADir = join(dir, "plain-file");
    writeFileSync(notADir, "");
    await assert.rejects(volume.copyToImage(client, { name: "nowhere", diskFormat: "qcow2", stagingDir: join(notADir, "staging") }), /stagingDir: cannot make a staging directory in .* \(ENOTDIR\)/);
    assert.deepEqual((await client.find({})).map((i) => i.id), before);
    assert.deepEqual(await volume.snapshots(), []);
  });

  test("a staging directory that fills up mid-conversion leaves no image, no staging file and no snapshot", async (t) => {
    if (needsRoot(t)) return; // mounting a small tmpfs
    const small = join(dir, "small");
    mkdirSync(small);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", small]);
    try {
      const before = (await client.find({})).map((i) => i.id);
      await assert.rejects(volume.copyToImage(client, { name: "full", diskFormat: "qcow2", stagingDir: small }), (err: unknown) => {
        assert.ok(err instanceof NoSpaceError, String(err));
        assert.match(err.message, /the staging directory .* filled up while qemu-img made the qcow2 image of volume golden; the staged file was removed/);
        return true;
      });
      assert.deepEqual(readdirSync(small), []);
      assert.deepEqual((await client.find({})).map((i) => i.id), before);
      assert.deepEqual(await volume.snapshots(), []);
    } finally {
      execFileSync("umount", [small]);
    }
  });

  test("a Glance that refuses the upload midway leaves no image, no staging file and no snapshot", async () => {
    const capped = await GlanceServer.start({ imageSizeCap: MiB });
    const cappedClient = glanceImageService("glance", glanceEntry(capped.endpoint));
    try {
      const staging = join(dir, "staging-capped");
      mkdirSync(staging);
      await assert.rejects(volume.copyToImage(cappedClient, { name: "too-big", diskFormat: "vhdx", stagingDir: staging }), /more than the Glance at .* accepts/);
      assert.deepEqual(await cappedClient.find({}), [], "the half-made image was deleted");
      assert.deepEqual(readdirSync(staging), []);
      assert.deepEqual(await volume.snapshots(), []);
    } finally {
      cappedClient.close();
      capped.stop();
    }
  });
  test("a Glance killed mid-upload: the error says the upload stopped, and no temporary snapshot is left", async () => {
    const dying = await GlanceServer.start();
    const dyingClient = glanceImageService("glance", glanceEntry(dying.endpoint));
    let killed = false;
    try {
      const copy = volume.copyToImage(dyingClient, { name: "cut" }, {
        onProgress: (p) => {
          // Halfway through the streamed raw upload, by its pid (SIGKILL: no graceful end of the request).
          if (!killed && p.done > p.total / 2) {
            killed = true;
            process.kill(dying.pid, "SIGKILL");
          }
        },
      });
      await assert.rejects(copy, /upload of Glance image .* stopped after \d+ bytes|ECONNRESET|EPIPE|socket hang up/);
      assert.ok(killed);
      assert.deepEqual(await volume.snapshots(), []);
    } finally {
      dyingClient.close();
      dying.stop();
    }
  });
});
