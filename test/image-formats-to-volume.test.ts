// Every image format kindling reads, compressed or not, into a new volume on the file backend,
// through the library (backend.createVolume({ image })): the image is staged once in a private
// staging file, checked (inspector, policy, qemu-img info), converted with qemu-img straight
// into the volume, and the volume then holds exactly what qemu-img reads the image as. The
// hostile corpus is refused by the check that names its fault, leaving no volume, no staging
// file and no byte of the host file anywhere; sizes default to the image's, a larger one is
// honoured, a smaller one refused naming the size needed; a killed copy's staging file is swept.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { gzipSync } from "node:zlib";
import { after, before, describe, test } from "node:test";
import { UnsafeImageError } from "../provider/images/inspect";
import { FileSource } from "../provider/images/sources/file";
import { sweepStaging } from "../provider/images/staging";
import { prepareImage } from "../provider/images/to-volume";
import type { Backend, ProgressEvent } from "../provider/library";
import { ConflictError, InvalidInputError, NoSpaceError } from "../provider/util/errors";
import { fileBackend, readAt } from "./helpers/backends";
import { HOST_SECRET, HOST_SECRET_MARK, asRaw, buildFormats, buildHostiles, diskContent, filesHolding, type FormatCase } from "./helpers/image-corpus";
import { needsRoot, removeDir } from "./helpers/env";
import { freeBytes, makeFilesystem } from "./helpers/filesystems";
import { startImageServer } from "./helpers/image-http";

const MiB = 1 << 20;
const GiB = 1 << 30;

describe("every image format into a new volume on the file backend", () => {
  let backend: Backend;
  let dir: string;
  let staging: string;
  let images: string;
  let formats: FormatCase[];
  const raw = diskContent();
  const stagingLeft = () => (existsSync(staging) ? readdirSync(staging) : []);

  before(async () => {
    ({ backend, dir } = await fileBackend());
    staging = join(dir, "staging");
    images = join(dir, "images");
    mkdirSync(images);
    writeFileSync(join(images, "disk.raw"), raw);
    writeFileSync(join(dir, "host-secret"), HOST_SECRET);
    formats = buildFormats(images, join(images, "disk.raw"));
  });
  after(async () => {
    await backend.close();
    removeDir(dir);
  });

  test("each format and each compressed wrapper: the volume holds what qemu-img reads the image as", async () => {
    assert.equal(formats.length, 16);
    for (const image of formats) {
      const events: ProgressEvent[] = [];
      const listen = (e: ProgressEvent) => events.push(e);
      backend.on("progress", listen);
      const volume = await backend.createVolume({ name: `v-${formats.indexOf(image)}`, image: `file:${image.path}`, allowUnverified: true }, { stagingDir: staging });
      backend.off("progress", listen);
      const reference = asRaw(image, dir);
      assert.ok(reference.length >= raw.length, image.name);
      assert.equal(volume.sizeGiB, 1, `${image.name}: the size defaults to what the image needs`);
      const bytes = await readAt(volume, reference.length + MiB);
      assert.ok(bytes.subarray(0, reference.length).equals(reference), `${image.name}: the volume holds the image's bytes`);
      assert.ok(bytes.subarray(0, raw.length).equals(raw), `${image.name}: which are the disk it was made from`);
      assert.ok(bytes.subarray(reference.length).every((b) => b === 0), `${image.name}: zeroes after it`);
      assert.deepEqual(stagingLeft(), [], `${image.name}: no staging file is left`);
      // Where it came from, as the volume records it: the file, and what the content was found to be.
      assert.equal(volume.image?.kind, "file");
      assert.equal(volume.image?.detectedFormat, image.qemuFormat === "vpc" ? "vhd" : image.qemuFormat);
      assert.equal(volume.image?.virtualSizeBytes, reference.length);
      assert.equal(volume.image?.sizeBytes, readFileSync(image.path).length, `${image.name}: the bytes the source sent`);
      const operations = new Set(events.map((e) => e.operation));
      assert.ok(operations.has("stage-image") && operations.has("create"), `${image.name}: progress of staging and of the conversion (${[...operations].join(", ")})`);
      const last = events.filter((e) => e.operation === "create").pop();
      assert.ok(last && last.total > 0 && last.done === last.total, `${image.name}: the conversion's progress reached its end`);
      await volume.delete();
    }
  });

  test("qemu-img compare finds the volume and the image identical (over the image's size)", async () => {
    const image = formats.find((f) => f.name === "vmdk streamOptimized") as FormatCase;
    const volume = await backend.createVolume({ name: "compared", image: `file:${image.path}`, imageDigests: { sha256: createHash("sha256").update(readFileSync(image.path)).digest("hex") } }, { stagingDir: staging });
    // Not -s (strict): the volume is larger than the image, and its tail must read as zeroes, which compare checks.
    const out = execFileSync("qemu-img", ["compare", "-f", "vmdk", "-F", "raw", image.path, volume.location as string]).toString();
    assert.match(out, /Images are identical/);
    await volume.delete();
  });

  test("an ImageSource with the caller's imageDigests: both are checked, and two that disagree are refused before a byte moves", async () => {
    const image = formats.find((f) => f.name === "vhdx") as FormatCase;
    const right = createHash("sha256").update(readFileSync(image.path)).digest("hex");
    const wrong = createHash("sha256").update("not it").digest("hex");
    const volume = await backend.createVolume({ name: "digested", image: new FileSource(image.path), imageDigests: { sha256: right } }, { stagingDir: staging });
    assert.ok((await readAt(volume, raw.length)).equals(raw));
    await volume.delete();
    await assert.rejects(backend.createVolume({ name: "digested-wrong", image: new FileSource(image.path), imageDigests: { sha256: wrong } }, { stagingDir: staging }), /but imageDigests\.sha256 says/);
    await assert.rejects(
      backend.createVolume({ name: "digested-clash", image: new FileSource(image.path, [{ algo: "sha256", value: right, from: "the file's owner" }]), imageDigests: { sha256: wrong } }, { stagingDir: staging }),
      (err: unknown) => err instanceof ConflictError && /imageDigests\.sha256 says its sha256 is/.test(err.message),
    );
    await assert.rejects(backend.createVolume({ name: "digested-bad", image: `file:${image.path}`, imageDigests: { sha1: right } as never }, { stagingDir: staging }), /imageDigests/);
    assert.deepEqual((await backend.volumes()).filter((v) => v.name.startsWith("digested")), []);
    assert.deepEqual(stagingLeft(), []);
  });

  test("a larger size is honoured, a smaller one refused naming sizeGiB and the size needed, before any volume exists", async () => {
    const image = formats.find((f) => f.name === "qcow2") as FormatCase;
    const big = await backend.createVolume({ name: "bigger", image: `file:${image.path}`, allowUnverified: true, sizeGiB: 3 }, { stagingDir: staging });
    assert.equal(big.sizeGiB, 3);
    assert.ok((await readAt(big, raw.length)).equals(raw));
    await big.delete();
    // A qcow2 of 1 GiB and 1 MiB needs 2 GiB: compressed, so its size is known only once staged.
    const large = join(images, "large.qcow2");
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", large, `${GiB + MiB}`]);
    execFileSync("gzip", ["-q", "-k", "-f", large]);
    const before = (await backend.volumes()).length;
    await assert.rejects(backend.createVolume({ name: "smaller", image: `file:${large}.gz`, allowUnverified: true, sizeGiB: 1 }, { stagingDir: staging }), (err: unknown) => {
      assert.ok(err instanceof InvalidInputError, String(err));
      assert.equal(err.field, "sizeGiB");
      assert.match(err.message, /the image needs at least 2 GiB \(a virtual size of 1074790400 bytes\), more than 1/);
      return true;
    });
    assert.equal((await backend.volumes()).length, before, "no volume was made");
    assert.deepEqual(stagingLeft(), []);
    const fits = await backend.createVolume({ name: "fits", image: `file:${large}.gz`, allowUnverified: true }, { stagingDir: staging });
    assert.equal(fits.sizeGiB, 2, "without a size: the image's");
    await fits.delete();
  });

  test("the hostile corpus is refused by the check naming its fault: no volume, no staging file, no host byte anywhere", async () => {
    const hostiles = buildHostiles(images, join(dir, "host-secret"));
    const before = (await backend.volumes()).map((v) => v.name);
    for (const hostile of hostiles) {
      await assert.rejects(backend.createVolumeFromImage(new FileSource(hostile.path), { name: "hostile", allowUnverified: true }, { stagingDir: staging }), (err: unknown) => {
        assert.ok(err instanceof UnsafeImageError, `${hostile.name}: an UnsafeImageError, not ${String(err)}`);
        assert.ok(err.checks.includes(hostile.check), `${hostile.name}: check ${hostile.check} failed (got ${err.checks.join(", ")})`);
        assert.match(err.message, /refused by check /);
        return true;
      });
      assert.deepEqual((await backend.volumes()).map((v) => v.name), before, `${hostile.name}: no volume`);
      assert.deepEqual(stagingLeft(), [], `${hostile.name}: no staging file`);
    }
    // The host file's bytes are in the host file and the data file made from it, nowhere else.
    const holding = filesHolding(dir, HOST_SECRET_MARK, (p) => p === join(dir, "host-secret") || p === join(images, "external.data"));
    assert.deepEqual(holding, []);
  });

  test("size bombs: a qcow2 claiming 1 PiB, and a gzip inflating past what the pool could hold, are stopped; nothing left", async () => {
    const bomb = join(images, "bomb.qcow2");
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", bomb, "1P"]);
    await assert.rejects(backend.createVolume({ name: "bomb", image: `file:${bomb}`, allowUnverified: true }, { stagingDir: staging }), (err: unknown) => {
      assert.ok(err instanceof UnsafeImageError, String(err));
      assert.deepEqual(err.checks, ["virtual_size"]);
      return true;
    });
    // 64 MiB of zeroes in 64 KiB of gzip, against a limit of 16 MiB (the pool's size, here given directly).
    const zeroes = join(images, "zeroes.gz");
    writeFileSync(zeroes, gzipSync(Buffer.alloc(64 * MiB)));
    await assert.rejects(prepareImage(new FileSource(zeroes), { allowUnverified: true, stagingDir: staging, maxImageBytes: 16 * MiB }), /decompresses to more than 16777216 bytes/);
    assert.deepEqual(stagingLeft(), []);
    assert.deepEqual((await backend.volumes()).filter((v) => v.name === "bomb"), []);
  });

  test("an empty file and a truncated compressed image are refused, leaving nothing", async () => {
    writeFileSync(join(images, "empty.img"), Buffer.alloc(0));
    await assert.rejects(backend.createVolume({ name: "empty", image: `file:${join(images, "empty.img")}`, allowUnverified: true }, { stagingDir: staging }), /holds no image|0 bytes/);
    const gz = (formats.find((f) => f.name === "gzip of qcow2") as FormatCase).path;
    const whole = readFileSync(gz);
    writeFileSync(join(images, "cut.gz"), whole.subarray(0, Math.floor(whole.length / 2)));
    await assert.rejects(backend.createVolume({ name: "cut", image: `file:${join(images, "cut.gz")}`, allowUnverified: true }, { stagingDir: staging }), /not valid gzip|unexpected end/i);
    assert.deepEqual(stagingLeft(), []);
    assert.deepEqual((await backend.volumes()).filter((v) => ["empty", "cut"].includes(v.name)), []);
  });

  test("a staging area too small: refused before the download when the size is known, stopped when it fills up; nothing left", async (t) => {
    if (needsRoot(t)) return;
    const fs = makeFilesystem("ext4", 16);
    try {
      const area = join(fs.mountpoint, "staging");
      mkdirSync(area);
      // 2 MiB left: less than the staged qcow2 or the inflated raw image needs.
      writeFileSync(join(fs.mountpoint, "ballast"), Buffer.alloc(Math.max(0, freeBytes(fs.mountpoint) - 2 * MiB), 1));
      const qcow2 = formats.find((f) => f.name === "qcow2") as FormatCase;
      await assert.rejects(backend.createVolume({ name: "no-room", image: `file:${qcow2.path}`, allowUnverified: true }, { stagingDir: area }), (err: unknown) => {
        assert.ok(err instanceof NoSpaceError, String(err));
        assert.match(err.message, /staging the image needs \d+ bytes, but only \d+ are free/);
        return true;
      });
      // Compressed: its inflated size is not known beforehand, so the disk filling up stops it.
      const gz = formats.find((f) => f.name === "gzip of raw") as FormatCase;
      await assert.rejects(backend.createVolume({ name: "no-room", image: `file:${gz.path}`, allowUnverified: true }, { stagingDir: area }), (err: unknown) => {
        assert.ok(err instanceof NoSpaceError, String(err));
        assert.match(err.message, /filled up while staging/);
        return true;
      });
      // The disk fills up while the source is slow to send the rest: the failed write is taken
      // up by the copy (not left as an unhandled rejection, which would end the process).
      writeFileSync(join(fs.mountpoint, "ballast-2"), Buffer.alloc(Math.max(0, freeBytes(fs.mountpoint) - 256 * 1024), 1));
      const server = await startImageServer(images);
      try {
        const name = gz.path.slice(images.length + 1);
        await assert.rejects(backend.createVolume({ name: "no-room", image: `${server.url}/pause/${name}`, allowUnverified: true }, { stagingDir: area }), (err: unknown) => {
          assert.ok(err instanceof NoSpaceError, String(err));
          assert.match(err.message, /filled up while staging/);
          return true;
        });
      } finally {
        await server.close();
      }
      assert.deepEqual(readdirSync(area), [], "no staging directory is left");
      assert.deepEqual((await backend.volumes()).filter((v) => v.name === "no-room"), []);
    } finally {
      fs.remove();
    }
  });

  test("a copy killed while staging leaves its staging directory, which the next copy sweeps", async () => {
    const area = join(dir, "staging-killed");
    // A real process makes a staging file, writes into it and is killed (as a copy killed mid-download would be).
    const script = `
      const { newStagingFile } = require(${JSON.stringify(resolve(__dirname, "..", "provider", "images", "staging.js"))});
      newStagingFile({ stagingDir: ${JSON.stringify(area)} }).then((s) => {
        require("node:fs").writeFileSync(s.path, "half an image");
        process.stdout.write(s.dir + "\\n");
        setInterval(() => undefined, 1000);
      });`;
    const child = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    const left = await new Promise<string>((ok) => child.stdout.once("data", (d: Buffer) => ok(d.toString().trim())));
    await new Promise<void>((ok) => {
      child.once("exit", () => ok());
      child.kill("SIGKILL");
    });
    assert.ok(existsSync(join(left, "image")), "a killed process cannot clean up after itself");
    const image = formats.find((f) => f.name === "vdi") as FormatCase;
    const volume = await backend.createVolume({ name: "after-kill", image: `file:${image.path}`, allowUnverified: true }, { stagingDir: area });
    assert.equal(existsSync(left), false, "the next copy swept the dead copy's staging directory");
    assert.deepEqual(readdirSync(area), []);
    assert.deepEqual(sweepStaging(area), []);
    await volume.delete();
  });
});
