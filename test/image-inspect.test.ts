// The image format inspector against a hostile corpus built here with qemu-img and a few bytes
// of editing (nothing downloaded): every image that names another file, hides a second format,
// claims to be what it is not, or is of a banned format is refused by the named check before
// qemu-img is run on it at all; every good image is detected with the right format and virtual
// size, qemu-img info (run under prlimit with -f) agrees, and feeding the bytes in chunks of 1,
// 511 or 4096 bytes gives the same answer as reading the file.
import assert from "node:assert/strict";
import { copyFileSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  checkImageFile,
  crossCheckQemuInfo,
  enforcePolicy,
  ImageInspector,
  inspectFile,
  qemuImgInfo,
  qemuInfoArgs,
  UnsafeImageError,
  type DetectedFormat,
  type ImageCheckOptions,
  type Inspection,
  type Runner,
} from "../provider/images/inspect";
import { BackendError } from "../provider/util/errors";
import { run } from "../provider/util/run";
import { MiB } from "../provider/util/sizes";
import { removeDir, sh, tempDir } from "./helpers/env";

const SECRET = Buffer.from("HOST-SECRET-BYTES-".repeat(58254).slice(0, MiB));
const RAW_SIZE = 2 * MiB + 64 * 1024;

let dir: string;
const p = (name: string) => join(dir, name);

function qemuImg(...args: string[]): void {
  sh("qemu-img", args);
}

/** Copies `src` to `dst` and overwrites bytes at `offset` (the "few bytes of editing"). */
function patched(src: string, dst: string, edits: [offset: number, bytes: Buffer][]): string {
  const buf = readFileSync(src);
  for (const [offset, bytes] of edits) bytes.copy(buf, offset);
  writeFileSync(dst, buf);
  return dst;
}

function u64be(value: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(value);
  return b;
}

function u32be(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value);
  return b;
}

/** A sparse vmdk whose embedded descriptor is rewritten by `edit` (kept inside its sectors). */
function withDescriptor(src: string, dst: string, edit: (text: string) => string): string {
  const buf = readFileSync(src);
  const offset = Number(buf.readBigUInt64LE(28)) * 512;
  const size = Number(buf.readBigUInt64LE(36)) * 512;
  const text = buf.subarray(offset, offset + size).toString("latin1").replace(/\0+$/, "");
  const next = Buffer.from(edit(text), "latin1");
  assert.ok(next.length <= size, "the edited descriptor still fits its sectors");
  buf.fill(0, offset, offset + size);
  next.copy(buf, offset);
  writeFileSync(dst, buf);
  return dst;
}

/** An ISO 9660 primary volume descriptor and set terminator at 32 KiB, as mkisofs writes them. */
function isoDescriptors(buf: Buffer): void {
  buf[0x8000] = 1;
  buf.write("CD001", 0x8001, "latin1");
  buf[0x8006] = 1;
  buf[0x8800] = 0xff;
  buf.write("CD001", 0x8801, "latin1");
  buf[0x8806] = 1;
}

/** A raw disk's content: text every 64 KiB and zeros between, so no format magic appears by chance. */
function rawContent(size: number): Buffer {
  const buf = Buffer.alloc(size);
  for (let at = 0; at < size; at += 64 * 1024) buf.write(`kindling raw image block ${at / 65536}\n`, at, "latin1");
  return buf;
}

/** The project's run helper, recording every command line it is asked to run. */
function recordingRunner(): { runner: Runner; calls: string[][] } {
  const calls: string[][] = [];
  return {
    calls,
    runner: (command, args, opts) => {
      calls.push([command, ...args]);
      return run(command, args, opts);
    },
  };
}

/** Streams a file's bytes through the inspector in chunks of `size` bytes. */
function streamed(path: string, size: number): Inspection {
  const data = readFileSync(path);
  const inspector = new ImageInspector();
  for (let at = 0; at < data.length; at += size) inspector.feed(data.subarray(at, at + size));
  return inspector.finish();
}

function failedChecks(i: Inspection): string[] {
  return i.failures.map((f) => f.check).sort();
}

before(() => {
  dir = tempDir("kindling-inspect-");
  writeFileSync(p("host-secret"), SECRET);
  writeFileSync(p("good.raw"), rawContent(RAW_SIZE));
  writeFileSync(p("pw"), "inspector-test-passphrase");
  // The clean images the hostile ones are edited from.
  qemuImg("create", "-q", "-f", "qcow2", p("clean.qcow2"), "1M");
  qemuImg("create", "-q", "-f", "qcow2", "-o", "compat=0.10", p("clean-v2.qcow2"), "1M");
  qemuImg("create", "-q", "-f", "vmdk", p("clean-sparse.vmdk"), "1M");
  // one GPT disk (sgdisk is slow to start), copied and edited for the others
  writeFileSync(p("good-gpt.img"), Buffer.alloc(4 * MiB));
  sh("sgdisk", ["-o", "-n", "1:2048:0", p("good-gpt.img")]);
});

after(() => removeDir(dir));

describe("good images are detected with the right format and virtual size, and qemu-img info agrees", () => {
  interface Good {
    name: string;
    build: () => string;
    format: DetectedFormat;
    qemuFormat: string;
    virtualSize?: number;
    details?: Record<string, unknown>;
    /** The size of the raw disk it was made from, when not good.raw. */
    sourceSize?: number;
    /** Every format that matched, when more than the one decided. */
    matches?: DetectedFormat[];
  }
  const goods: Good[] = [
    { name: "raw", build: () => p("good.raw"), format: "raw", qemuFormat: "raw", virtualSize: RAW_SIZE },
    {
      name: "qcow2",
      build: () => (qemuImg("convert", "-f", "raw", "-O", "qcow2", p("good.raw"), p("good.qcow2")), p("good.qcow2")),
      format: "qcow2",
      qemuFormat: "qcow2",
      virtualSize: RAW_SIZE,
      details: { qcow2Version: 3 },
    },
    {
      name: "qcow2 v2 (compat 0.10)",
      build: () => (qemuImg("convert", "-f", "raw", "-O", "qcow2", "-o", "compat=0.10", p("good.raw"), p("good-v2.qcow2")), p("good-v2.qcow2")),
      format: "qcow2",
      qemuFormat: "qcow2",
      virtualSize: RAW_SIZE,
      details: { qcow2Version: 2 },
    },
    {
      name: "qcow2 compressed",
      build: () => (qemuImg("convert", "-c", "-f", "raw", "-O", "qcow2", p("good.raw"), p("good-c.qcow2")), p("good-c.qcow2")),
      format: "qcow2",
      qemuFormat: "qcow2",
      virtualSize: RAW_SIZE,
    },
    {
      name: "vmdk streamOptimized",
      build: () => (qemuImg("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", p("good.raw"), p("good-so.vmdk")), p("good-so.vmdk")),
      format: "vmdk",
      qemuFormat: "vmdk",
      virtualSize: RAW_SIZE,
      details: { vmdkCreateType: "streamOptimized" },
    },
    {
      name: "vmdk monolithicSparse",
      build: () => (qemuImg("convert", "-f", "raw", "-O", "vmdk", p("good.raw"), p("good-ms.vmdk")), p("good-ms.vmdk")),
      format: "vmdk",
      qemuFormat: "vmdk",
      virtualSize: RAW_SIZE,
      details: { vmdkCreateType: "monolithicSparse" },
    },
    {
      name: "vhdx",
      build: () => (qemuImg("convert", "-f", "raw", "-O", "vhdx", p("good.raw"), p("good.vhdx")), p("good.vhdx")),
      format: "vhdx",
      qemuFormat: "vhdx",
      virtualSize: RAW_SIZE,
    },
    {
      name: "vdi",
      build: () => (qemuImg("convert", "-f", "raw", "-O", "vdi", p("good.raw"), p("good.vdi")), p("good.vdi")),
      format: "vdi",
      qemuFormat: "vdi",
      virtualSize: RAW_SIZE,
    },
    // VHD sizes by CHS geometry (qemu's rule for images it creates), so the exact size is
    // whatever qemu-img info says; the footer's place is what differs between the two.
    {
      name: "vhd fixed (footer only at the end)",
      build: () => (qemuImg("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed", p("good.raw"), p("good-fixed.vhd")), p("good-fixed.vhd")),
      format: "vhd",
      qemuFormat: "vpc",
      details: { vhdDiskType: 2, vhdFooterAtStart: false },
    },
    {
      // a size that is no multiple of the inspector's 4 KiB tail: the footer straddles its ring
      name: "vhd fixed of an odd size",
      build: () => {
        writeFileSync(p("odd.raw"), rawContent(MiB + 3 * 512));
        qemuImg("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed", p("odd.raw"), p("odd-fixed.vhd"));
        assert.notEqual(statSync(p("odd-fixed.vhd")).size % 4096, 0);
        return p("odd-fixed.vhd");
      },
      format: "vhd",
      qemuFormat: "vpc",
      sourceSize: MiB + 3 * 512,
    },
    {
      name: "vhd dynamic",
      build: () => (qemuImg("convert", "-f", "raw", "-O", "vpc", p("good.raw"), p("good-dynamic.vhd")), p("good-dynamic.vhd")),
      format: "vhd",
      qemuFormat: "vpc",
      details: { vhdDiskType: 3, vhdFooterAtStart: true },
    },
    {
      // force_size makes qemu write creator "qem2", whose images are sized by current_size
      name: "vhd dynamic sized by current_size (force_size)",
      build: () => (qemuImg("convert", "-f", "raw", "-O", "vpc", "-o", "force_size=on", p("good.raw"), p("good-forced.vhd")), p("good-forced.vhd")),
      format: "vhd",
      qemuFormat: "vpc",
      virtualSize: RAW_SIZE,
    },
    {
      name: "gpt disk (raw)",
      build: () => p("good-gpt.img"),
      format: "gpt",
      qemuFormat: "raw",
      virtualSize: 4 * MiB,
    },
    {
      name: "hybrid iso with a gpt (an iso, as Glance decides)",
      build: () => {
        // the volume descriptors at 32 KiB sit between the GPT's entries and its first partition
        const buf = readFileSync(p("good-gpt.img"));
        isoDescriptors(buf);
        writeFileSync(p("hybrid.iso"), buf);
        return p("hybrid.iso");
      },
      format: "iso",
      qemuFormat: "raw",
      virtualSize: 4 * MiB,
      matches: ["iso", "gpt"],
    },
    {
      name: "fixed vhd of a gpt disk (a vhd, not a polyglot)",
      build: () => (qemuImg("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed", p("good-gpt.img"), p("gpt-fixed.vhd")), p("gpt-fixed.vhd")),
      format: "vhd",
      qemuFormat: "vpc",
      matches: ["vhd", "gpt"],
      sourceSize: 4 * MiB,
    },
  ];

  for (const good of goods) {
    test(good.name, async () => {
      const path = good.build();
      const { runner, calls } = recordingRunner();
      const checked = await checkImageFile(path, { declaredFormat: good.qemuFormat === "vpc" ? "vhd" : good.qemuFormat === "raw" ? "raw" : good.format, runner });
      assert.equal(checked.inspection.format, good.format);
      assert.deepEqual(checked.inspection.failures, []);
      assert.deepEqual(checked.inspection.matches, good.matches ?? (good.format === "raw" ? [] : [good.format]));
      assert.equal(checked.qemuFormat, good.qemuFormat);
      assert.equal(checked.qemuInfo.format, good.qemuFormat, "qemu-img info reads it as the same format");
      assert.equal(checked.virtualSize, checked.qemuInfo["virtual-size"], "qemu-img info agrees on the virtual size");
      if (good.virtualSize !== undefined) assert.equal(checked.virtualSize, good.virtualSize);
      else {
        const source = good.sourceSize ?? RAW_SIZE;
        assert.ok(checked.virtualSize >= source - 64 * 1024 && checked.virtualSize <= source + MiB, `virtual size ${checked.virtualSize} is about the source's ${source}`);
      }
      for (const [key, value] of Object.entries(good.details ?? {})) assert.equal(checked.inspection.details[key], value, key);
      // qemu-img ran once, under prlimit, with the format given and the absolute path
      assert.equal(calls.length, 1);
      assert.deepEqual(calls[0], ["prlimit", ...qemuInfoArgs(path, good.qemuFormat)]);
      // the same answer whatever the chunk size the bytes arrive in
      const small = statSync(path).size <= 512 * 1024;
      for (const size of small ? [1, 511, 4096] : [511, 4096, 1 << 20]) {
        const s = streamed(path, size);
        assert.equal(s.format, good.format, `format with ${size}-byte chunks`);
        assert.equal(s.virtualSize, checked.virtualSize, `virtual size with ${size}-byte chunks`);
        assert.deepEqual(s.failures, [], `no failed check with ${size}-byte chunks`);
        assert.deepEqual(s.missed, [], `nothing missed with ${size}-byte chunks`);
      }
    });
  }

  test("small images qemu-img creates, streamed one byte at a time, match qemu-img info", async () => {
    const made: [string, string, DetectedFormat][] = [
      ["qcow2", "tiny.qcow2", "qcow2"],
      ["vmdk", "tiny.vmdk", "vmdk"],
      ["vdi", "tiny.vdi", "vdi"],
      ["vpc", "tiny.vhd", "vhd"],
    ];
    for (const [qemuFormat, name, format] of made) {
      qemuImg("create", "-q", "-f", qemuFormat, p(name), "7M");
      const info = await qemuImgInfo(p(name), qemuFormat);
      for (const size of [1, 511, 4096]) {
        const s = streamed(p(name), size);
        assert.equal(s.format, format, `${name} with ${size}-byte chunks`);
        assert.equal(s.virtualSize, info["virtual-size"], `${name} virtual size with ${size}-byte chunks`);
        assert.deepEqual(s.failures, []);
      }
    }
  });
});

describe("hostile images are refused by the named check before qemu-img runs", () => {
  interface Hostile {
    name: string;
    build: () => string;
    /** Checks that must all be among the failures. */
    checks: string[];
    /** Checks that must not be: the refusal is for the right reason. */
    notChecks?: string[];
    format?: DetectedFormat;
    opts?: ImageCheckOptions;
  }
  const hostiles: Hostile[] = [
    {
      name: "qcow2 with a backing file (a host file with known bytes)",
      build: () => (qemuImg("create", "-q", "-f", "qcow2", "-b", p("host-secret"), "-F", "raw", p("backing.qcow2")), p("backing.qcow2")),
      checks: ["qcow2.backing_file"],
      format: "qcow2",
    },
    {
      name: "a raw-declared qcow2 with a backing file (CVE-2024-40767)",
      build: () => p("backing.qcow2"),
      checks: ["format_mismatch", "qcow2.backing_file"],
      opts: { declaredFormat: "raw" },
      format: "qcow2",
    },
    {
      name: "qcow2 with an external data file",
      build: () => {
        qemuImg("create", "-q", "-f", "qcow2", "-o", `data_file=${p("external.data")}`, p("data-file.qcow2"), "1M");
        writeFileSync(p("external.data"), SECRET);
        return p("data-file.qcow2");
      },
      checks: ["qcow2.data_file"],
      notChecks: ["qcow2.backing_file", "qcow2.unknown_features"],
    },
    {
      name: "qcow2 with only the data-file header extension (feature bit cleared)",
      build: () => {
        const buf = readFileSync(p("data-file.qcow2"));
        const features = buf.readBigUInt64BE(72) & ~(1n << 2n);
        return patched(p("data-file.qcow2"), p("data-file-ext.qcow2"), [[72, u64be(features)]]);
      },
      checks: ["qcow2.data_file"],
    },
    {
      name: "qcow2 with an unknown incompatible feature bit",
      build: () => patched(p("clean.qcow2"), p("unknown-bit.qcow2"), [[72, u64be(1n << 20n)]]),
      checks: ["qcow2.unknown_features"],
      notChecks: ["qcow2.data_file"],
    },
    {
      name: "qcow2 of an unknown version",
      build: () => patched(p("clean.qcow2"), p("v4.qcow2"), [[4, u32be(4)]]),
      checks: ["qcow2.version"],
    },
    {
      name: "qcow version 1 (banned)",
      build: () => patched(p("clean-v2.qcow2"), p("v1.qcow"), [[4, u32be(1)]]),
      checks: ["banned_format"],
      format: "qcow",
    },
    {
      name: "vmdk text descriptor whose extent is a host file",
      build: () => {
        writeFileSync(
          p("host-extent.vmdk"),
          `# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="monolithicSparse"\n\nRW 2048 SPARSE "${p("host-secret")}"\n`,
        );
        return p("host-extent.vmdk");
      },
      checks: ["vmdk.descriptor_file", "vmdk.extents"],
      format: "vmdk",
    },
    {
      name: "vmdk monolithicFlat (qemu-img made)",
      build: () => (qemuImg("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", p("flat.vmdk"), "1M"), p("flat.vmdk")),
      checks: ["vmdk.descriptor_file", "vmdk.create_type", "vmdk.extents"],
      format: "vmdk",
    },
    {
      name: "sparse vmdk whose embedded descriptor names a FLAT host file",
      build: () =>
        withDescriptor(p("clean-sparse.vmdk"), p("embedded-flat.vmdk"), (text) =>
          text.replace(/createType="[^"]*"/, 'createType="monolithicFlat"').replace(/^RW .*$/m, `RW 2048 FLAT "${p("host-secret")}" 0`),
        ),
      checks: ["vmdk.create_type", "vmdk.extents"],
      notChecks: ["vmdk.descriptor_file"],
    },
    {
      name: "sparse vmdk whose extent is a `..` path",
      build: () => withDescriptor(p("clean-sparse.vmdk"), p("dotdot.vmdk"), (text) => text.replace(/^RW (\d+) SPARSE .*$/m, 'RW $1 SPARSE "../host-secret"')),
      checks: ["vmdk.extents"],
      notChecks: ["vmdk.create_type", "vmdk.descriptor_file"],
    },
    {
      name: "sparse vmdk with two extents",
      build: () => withDescriptor(p("clean-sparse.vmdk"), p("two-extents.vmdk"), (text) => text.replace(/^(RW \d+ SPARSE .*)$/m, `$1\nRW 2048 SPARSE "other.vmdk"`)),
      checks: ["vmdk.extents"],
    },
    {
      name: "sparse vmdk naming a parent disk",
      build: () => withDescriptor(p("clean-sparse.vmdk"), p("parent.vmdk"), (text) => text.replace("parentCID=ffffffff", `parentCID=0badcafe\nparentFileNameHint="${p("host-secret")}"`)),
      checks: ["vmdk.parent"],
    },
    {
      name: "sparse vmdk with a descriptor line the inspector does not understand",
      build: () => withDescriptor(p("clean-sparse.vmdk"), p("odd-line.vmdk"), (text) => text.replace("# Extent description", "# Extent description\nchangeTrackPath = \"/etc\"")),
      checks: ["vmdk.descriptor"],
    },
    {
      name: "vmdk whose grain directory is at the end but has no footer",
      build: () => patched(p("clean-sparse.vmdk"), p("no-footer.vmdk"), [[56, Buffer.alloc(8, 0xff)]]),
      checks: ["vmdk.footer"],
    },
    {
      name: "polyglot: an iso whose unused first 32 KiB is a qcow2 header",
      build: () => {
        const buf = Buffer.alloc(MiB);
        readFileSync(p("clean-v2.qcow2")).copy(buf, 0, 0, 4096);
        isoDescriptors(buf);
        writeFileSync(p("iso-qcow2.img"), buf);
        return p("iso-qcow2.img");
      },
      checks: ["polyglot"],
      opts: { declaredFormat: "iso" },
    },
    {
      name: "polyglot: a gpt disk whose first bytes are a qcow2 header",
      build: () => {
        const header = readFileSync(p("clean-v2.qcow2")).subarray(0, 440);
        return patched(p("good-gpt.img"), p("gpt-qcow2.img"), [[0, header]]);
      },
      checks: ["polyglot"],
      opts: { declaredFormat: "raw" },
    },
    {
      name: "polyglot: a fixed vhd whose data starts with a qcow2 header",
      build: () => {
        const raw = rawContent(MiB);
        readFileSync(p("clean-v2.qcow2")).copy(raw, 0, 0, 4096);
        writeFileSync(p("qcow2-inside.raw"), raw);
        qemuImg("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed", p("qcow2-inside.raw"), p("qcow2-inside.vhd"));
        return p("qcow2-inside.vhd");
      },
      checks: ["polyglot"],
      opts: { declaredFormat: "vhd" },
    },
    {
      name: "gpt disk with a bad protective MBR",
      build: () => {
        return patched(p("good-gpt.img"), p("bad-pmbr.img"), [[446, Buffer.from([0x42])]]);
      },
      checks: ["gpt.mbr"],
      format: "gpt",
    },
    {
      name: "declared format mismatch: a qcow2 declared vmdk",
      build: () => p("clean.qcow2"),
      checks: ["format_mismatch"],
      notChecks: ["polyglot"],
      opts: { declaredFormat: "vmdk" },
    },
    {
      name: "declared format mismatch: raw bytes declared qcow2",
      build: () => p("good.raw"),
      checks: ["format_mismatch"],
      opts: { declaredFormat: "qcow2" },
      format: "raw",
    },
    ...(["gzip", "xz", "zstd", "bzip2"] as const).map(
      (tool): Hostile => ({
        name: `${tool}-compressed raw (detected as compressed)`,
        build: () => {
          const ext = { gzip: "gz", xz: "xz", zstd: "zst", bzip2: "bz2" }[tool];
          copyFileSync(p("good.raw"), p(`packed-${tool}.raw`));
          sh(tool, ["-q", "-f", p(`packed-${tool}.raw`)]);
          return p(`packed-${tool}.raw.${ext}`);
        },
        checks: ["compressed"],
        format: tool,
      }),
    ),
    {
      name: "qed (banned)",
      build: () => (qemuImg("create", "-q", "-f", "qed", p("banned.qed"), "1M"), p("banned.qed")),
      checks: ["banned_format"],
      format: "qed",
    },
    {
      name: "luks (banned)",
      // cryptsetup rather than qemu-img: qemu's key-derivation benchmark fails at random on a
      // loaded machine ("Unable to get accurate CPU usage"); the header is the same LUKS1
      build: () => {
        writeFileSync(p("banned.luks"), Buffer.alloc(4 * MiB));
        sh("cryptsetup", ["luksFormat", "-q", "--type", "luks1", "--pbkdf-force-iterations", "1000", "--key-file", p("pw"), p("banned.luks")]);
        return p("banned.luks");
      },
      checks: ["banned_format"],
      format: "luks",
    },
    {
      name: "a format left off a configured allowlist (vdi)",
      build: () => (qemuImg("create", "-q", "-f", "vdi", p("unlisted.vdi"), "1M"), p("unlisted.vdi")),
      checks: ["banned_format"],
      opts: { allowedFormats: ["raw", "qcow2"] },
      format: "vdi",
    },
    {
      name: "qcow2 claiming 1 PiB (a size bomb) against a 1 TiB limit",
      build: () => (qemuImg("create", "-q", "-f", "qcow2", p("bomb.qcow2"), "1P"), p("bomb.qcow2")),
      checks: ["virtual_size"],
      opts: { maxVirtualSizeBytes: 2 ** 40 },
    },
  ];

  for (const hostile of hostiles) {
    test(hostile.name, async () => {
      const path = hostile.build();
      const { runner, calls } = recordingRunner();
      await assert.rejects(checkImageFile(path, { ...hostile.opts, runner }), (err: unknown) => {
        assert.ok(err instanceof UnsafeImageError, `an UnsafeImageError, not ${String(err)}`);
        for (const check of hostile.checks) assert.ok(err.checks.includes(check), `check ${check} failed (got ${err.checks.join(", ")})`);
        for (const check of hostile.notChecks ?? []) assert.ok(!err.checks.includes(check), `check ${check} did not fail`);
        assert.match(err.message, new RegExp(`refused by check ${err.checks[0].replace(".", "\\.")}`));
        return true;
      });
      assert.deepEqual(calls, [], "no external command (qemu-img info, let alone convert) ran on the image");
      const fromFile = await inspectFile(path);
      if (hostile.format) assert.equal(fromFile.format, hostile.format);
      // streaming finds the same faults as reading the file
      for (const size of [511, 4096]) {
        const s = streamed(path, size);
        assert.deepEqual(s.matches, fromFile.matches, `matches with ${size}-byte chunks`);
        assert.deepEqual(failedChecks(s), failedChecks(fromFile), `failed checks with ${size}-byte chunks`);
      }
    });
  }

  test("the inspector finds the backing file name the qcow2 points at", async () => {
    const i = await inspectFile(p("backing.qcow2"));
    const failure = i.failures.find((f) => f.check === "qcow2.backing_file");
    assert.ok(failure?.reason.includes(p("host-secret")), failure?.reason);
  });
});

describe("qemu-img info is run safely and its answer cross-checked", () => {
  test("the cross-check refuses what qemu-img reports of a hostile image even when the inspector was fooled", async () => {
    // The inspector's view of a clean 1 MiB qcow2 stands in for an inspector that missed the
    // danger; qemu-img's real answers about the hostile files must still be refused.
    const clean = await inspectFile(p("clean.qcow2"));
    const backing = await qemuImgInfo(p("backing.qcow2"), "qcow2");
    assert.ok(crossCheckQemuInfo(backing, clean, p("backing.qcow2")).some((f) => f.check === "qemu_info.backing_file"));
    const dataFile = await qemuImgInfo(p("data-file.qcow2"), "qcow2");
    assert.ok(crossCheckQemuInfo(dataFile, clean, p("data-file.qcow2")).some((f) => f.check === "qemu_info.data_file"));
    const flat = await qemuImgInfo(p("flat.vmdk"), "vmdk");
    const asVmdk: Inspection = { ...clean, format: "vmdk", qemuFormat: "vmdk", virtualSize: flat["virtual-size"] };
    const flatChecks = crossCheckQemuInfo(flat, asVmdk, p("flat.vmdk")).map((f) => f.check);
    assert.ok(flatChecks.includes("qemu_info.vmdk_create_type"), flatChecks.join());
    assert.ok(flatChecks.includes("qemu_info.vmdk_extents"), flatChecks.join());
    // a qcow2 read with -f raw is a different format and size than the inspector found
    const asRaw = await qemuImgInfo(p("clean.qcow2"), "raw");
    const rawChecks = crossCheckQemuInfo(asRaw, clean, p("clean.qcow2")).map((f) => f.check);
    assert.deepEqual(rawChecks.sort(), ["qemu_info.format", "qemu_info.virtual_size"]);
    // and a clean image passes it
    assert.deepEqual(crossCheckQemuInfo(await qemuImgInfo(p("clean.qcow2"), "qcow2"), clean, p("clean.qcow2")), []);
  });

  test("qemu-img info runs under prlimit: too small an address space makes it fail", async () => {
    await assert.rejects(qemuImgInfo(p("clean.qcow2"), "qcow2", { limits: { addressSpaceBytes: 8 * MiB, cpuSeconds: 30 } }), BackendError);
    const info = await qemuImgInfo(p("clean.qcow2"), "qcow2");
    assert.equal(info["virtual-size"], MiB);
  });

  test("qemu-img info takes only absolute paths and plain format names", async () => {
    await assert.rejects(qemuImgInfo("clean.qcow2", "qcow2"), /absolute path/);
    await assert.rejects(qemuImgInfo(p("clean.qcow2"), "json:{}"), /not a qemu format name/);
    const args = qemuInfoArgs(p("clean.qcow2"), "qcow2");
    assert.deepEqual(args.slice(args.indexOf("qemu-img")), ["qemu-img", "info", "-f", "qcow2", "--output=json", "-U", p("clean.qcow2")]);
  });
});

describe("the streaming inspector's bounds", () => {
  test("a region the stream passed before a probe knew to ask for it is reported missed, not guessed", async () => {
    // A VHDX whose region table (at 192 KiB) puts the metadata region at 64 KiB, before itself.
    // With a 4 KiB prefix those bytes have gone by when the table is read: the verdict is
    // "incomplete", never a guess. With the default prefix they are held, and hold no metadata.
    qemuImg("create", "-q", "-f", "vhdx", p("bounds.vhdx"), "1M");
    const table = readFileSync(p("bounds.vhdx")).subarray(192 * 1024, 192 * 1024 + 4096);
    const count = table.readUInt32LE(8);
    const edits: [number, Buffer][] = [];
    for (let i = 0; i < count; i++) {
      if (table.readUInt32LE(16 + i * 32) !== 0x8b7ca206) continue;
      const offset = Buffer.alloc(8);
      offset.writeBigUInt64LE(64n * 1024n);
      edits.push([192 * 1024 + 16 + i * 32 + 16, offset]);
    }
    assert.equal(edits.length, 1, "the region table lists the metadata region");
    const data = readFileSync(patched(p("bounds.vhdx"), p("bounds-early.vhdx"), edits));
    const inspector = new ImageInspector({ prefixBytes: 4096 });
    for (let at = 0; at < data.length; at += 4096) inspector.feed(data.subarray(at, at + 4096));
    const early = inspector.finish();
    assert.equal(early.format, "vhdx");
    assert.deepEqual(early.missed, [{ offset: 64 * 1024, length: 64 * 1024 }]);
    assert.throws(() => enforcePolicy(early), (err: unknown) => err instanceof UnsafeImageError && err.checks[0] === "incomplete");
    const held = await inspectFile(p("bounds-early.vhdx"));
    assert.deepEqual(held.missed, []);
    assert.ok(held.failures.some((f) => f.check === "vhdx.metadata"));
    // the untouched image, streamed through the same small prefix: the metadata region 2 MiB or
    // more in is captured on the way, and the size is read
    const clean = readFileSync(p("bounds.vhdx"));
    const ok = new ImageInspector({ prefixBytes: 4096 });
    for (let at = 0; at < clean.length; at += 4096) ok.feed(clean.subarray(at, at + 4096));
    const found = ok.finish();
    assert.equal(found.virtualSize, MiB);
    assert.deepEqual(found.failures, []);
  });

  test("feeding after the end is an error", () => {
    const inspector = new ImageInspector();
    inspector.feed(Buffer.alloc(10));
    inspector.finish();
    assert.throws(() => inspector.feed(Buffer.alloc(1)), /after the end/);
  });
});
