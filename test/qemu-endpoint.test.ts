// qemu-img reaching volumes and snapshots: the file driver hands the pool file over open
// (/dev/fd/3), any other way goes through kindling's NBD server on a private unix socket.
// Both directions, both ways, against real qemu-img: the bytes arrive, nothing is left behind,
// and a pool file swapped for a link is refused before qemu-img runs.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Backend } from "../provider/library";
import { qemuImgConvert } from "../provider/images/qemu-convert";
import { qemuEndpoint } from "../provider/images/qemu-endpoint";
import { fileBackend, readAt, writeAt } from "./helpers/backends";
import { removeDir } from "./helpers/env";

const MiB = 1 << 20;

describe("qemu-img endpoints for volumes", () => {
  let backend: Backend;
  let dir: string;
  const data = Buffer.concat([randomBytes(MiB), Buffer.alloc(2 * MiB), randomBytes(MiB + 4096)]);
  let qcow2: string;

  before(async () => {
    ({ backend, dir } = await fileBackend());
    writeFileSync(join(dir, "disk.raw"), data);
    qcow2 = join(dir, "disk.qcow2");
    execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", join(dir, "disk.raw"), qcow2]);
  });
  after(async () => {
    await backend.close();
    removeDir(dir);
  });

  for (const preferNbd of [false, true]) {
    const via = preferNbd ? "nbd" : "file";
    test(`a qcow2 image converted into a new volume through ${via}`, async () => {
      const volume = await backend.createVolume({ name: `into-${via}`, sizeGiB: 1 });
      let last = 0;
      const endpoint = await qemuEndpoint(backend.driver, { kind: "volume", volume: volume.toDriver() }, { readOnly: false, preferNbd });
      assert.equal(endpoint.via, via);
      try {
        await qemuImgConvert({ path: qcow2, format: "qcow2" }, { endpoint }, { targetIsZero: true, onProgress: (f) => (last = f) });
      } finally {
        await endpoint.close();
      }
      assert.equal(last, 1, "qemu-img's progress reached 100%");
      assert.deepEqual(await readAt(volume, data.length), data);
      assert.deepEqual(await readAt(volume, MiB, data.length), Buffer.alloc(MiB), "past the image, the volume still reads as zeroes");
      if (preferNbd) assert.equal(existsSync(endpoint.imageOpts.match(/server\.path=([^,]+)/)![1]), false, "the NBD socket is gone after close");
    });

    test(`a snapshot converted to a qcow2 file through ${via}`, async () => {
      const volume = await backend.createVolume({ name: `from-${via}`, sizeGiB: 1 });
      await writeAt(volume, data, 8 * MiB);
      const snapshot = await volume.createSnapshot({ name: `snap-${via}` });
      const out = join(dir, `out-${via}.qcow2`);
      const endpoint = await qemuEndpoint(backend.driver, { kind: "snapshot", snapshot: snapshot.toDriver() }, { readOnly: true, preferNbd });
      try {
        await qemuImgConvert({ endpoint }, { path: out, format: "qcow2" }, { compress: true });
      } finally {
        await endpoint.close();
      }
      const raw = join(dir, `out-${via}.raw`);
      execFileSync("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", out, raw]);
      const back = readFileSync(raw);
      assert.equal(back.length, 1024 * MiB);
      assert.deepEqual(back.subarray(8 * MiB, 8 * MiB + data.length), data);
      assert.ok(back.subarray(0, 8 * MiB).every((b) => b === 0));
      rmSync(raw);
    });
  }

  test("a pool file swapped for a link is refused before qemu-img runs", async () => {
    const volume = await backend.createVolume({ name: "swapped", sizeGiB: 1 });
    const path = volume.location as string;
    const outside = join(dir, "outside.raw");
    writeFileSync(outside, Buffer.alloc(MiB, 7));
    rmSync(path);
    symlinkSync(outside, path);
    await assert.rejects(qemuEndpoint(backend.driver, { kind: "volume", volume: volume.toDriver() }, { readOnly: false }), /link|not a regular file|symbolic/i);
    assert.deepEqual(readFileSync(outside), Buffer.alloc(MiB, 7));
  });

  test("a failed conversion says what qemu-img said", async () => {
    const volume = await backend.createVolume({ name: "too-small", sizeGiB: 1 });
    const big = join(dir, "big.qcow2");
    execFileSync("qemu-img", ["create", "-f", "qcow2", big, "2G"]);
    const endpoint = await qemuEndpoint(backend.driver, { kind: "volume", volume: volume.toDriver() }, { readOnly: false });
    try {
      await assert.rejects(qemuImgConvert({ path: big, format: "qcow2" }, { endpoint }), /qemu-img convert failed: .*(smaller|size)/i);
    } finally {
      await endpoint.close();
    }
  });
});
