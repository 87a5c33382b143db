import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFileSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";

// Images for the image-to-volume tests, made here with qemu-img and the compressors (nothing
// downloaded): one raw disk in every format kindling reads, compressed wrappers of it, and the
// hostile corpus of the image notes (section 6.6) that must never reach a volume.

const MiB = 1 << 20;

/** A host file's bytes a hostile image points at: a pattern found nowhere else. */
export const HOST_SECRET = Buffer.from("HOST-SECRET-BYTES-".repeat(58255).slice(0, MiB));
export const HOST_SECRET_MARK = Buffer.from("HOST-SECRET-BYTES-HOST-SECRET");

function qemuImg(...args: string[]): void {
  execFileSync("qemu-img", args, { stdio: ["ignore", "pipe", "pipe"] });
}

/** A disk's content: random data, a run of zeroes, data again, ending off a MiB boundary. */
export function diskContent(): Buffer {
  return Buffer.concat([randomBytes(MiB + 4096), Buffer.alloc(2 * MiB), randomBytes(MiB - 4096 + 512 * 3)]);
}

export interface FormatCase {
  name: string;
  /** qemu's name for the format inside (what `qemu-img convert -f` reads it as). */
  qemuFormat: string;
  path: string;
}

/** `raw` in every format and wrapper the pipeline takes, each in `dir`. */
export function buildFormats(dir: string, raw: string): FormatCase[] {
  const p = (name: string) => join(dir, name);
  const out: FormatCase[] = [];
  const convert = (name: string, fmt: string, opts: string[] = []) => {
    qemuImg("convert", "-f", "raw", "-O", fmt, ...opts, raw, p(name));
    return p(name);
  };
  out.push({ name: "qcow2", qemuFormat: "qcow2", path: convert("disk.qcow2", "qcow2") });
  out.push({ name: "qcow2 compressed", qemuFormat: "qcow2", path: convert("disk-c.qcow2", "qcow2", ["-c"]) });
  out.push({ name: "vmdk streamOptimized", qemuFormat: "vmdk", path: convert("disk-so.vmdk", "vmdk", ["-o", "subformat=streamOptimized"]) });
  out.push({ name: "vmdk monolithicSparse", qemuFormat: "vmdk", path: convert("disk-ms.vmdk", "vmdk", ["-o", "subformat=monolithicSparse"]) });
  out.push({ name: "vpc (vhd dynamic)", qemuFormat: "vpc", path: convert("disk-dyn.vhd", "vpc") });
  out.push({ name: "vpc (vhd fixed)", qemuFormat: "vpc", path: convert("disk-fixed.vhd", "vpc", ["-o", "subformat=fixed"]) });
  out.push({ name: "vhdx", qemuFormat: "vhdx", path: convert("disk.vhdx", "vhdx") });
  out.push({ name: "vdi", qemuFormat: "vdi", path: convert("disk.vdi", "vdi") });
  const ext = { gzip: "gz", xz: "xz", zstd: "zst", bzip2: "bz2" } as const;
  for (const tool of ["gzip", "xz", "zstd", "bzip2"] as const) {
    for (const [inner, src, fmt] of [["raw", raw, "raw"], ["qcow2", p("disk.qcow2"), "qcow2"]] as const) {
      const name = `${inner}-${tool}.img`;
      copyFileSync(src, p(name));
      execFileSync(tool, ["-q", "-f", p(name)]);
      out.push({ name: `${tool} of ${inner}`, qemuFormat: fmt, path: p(`${name}.${ext[tool]}`) });
    }
  }
  return out;
}

/** What `qemu-img` reads the image as, as raw bytes (the reference a volume is compared with). */
export function asRaw(image: FormatCase, dir: string): Buffer {
  const out = join(dir, "reference.raw");
  let src = image.path;
  const tool = image.path.endsWith(".gz") ? "gzip" : image.path.endsWith(".xz") ? "xz" : image.path.endsWith(".zst") ? "zstd" : image.path.endsWith(".bz2") ? "bzip2" : undefined;
  if (tool) {
    src = join(dir, "reference.inner");
    writeFileSync(src, execFileSync(tool, ["-dc", image.path], { maxBuffer: 256 * MiB }));
  }
  qemuImg("convert", "-f", image.qemuFormat, "-O", "raw", src, out);
  return readFileSync(out);
}

export interface HostileCase {
  name: string;
  path: string;
  /** A check that must be among the failures the error names. */
  check: string;
}

/** The hostile corpus: each one names another file, hides a second format, or lies about what it is. */
export function buildHostiles(dir: string, hostFile: string): HostileCase[] {
  const p = (name: string) => join(dir, name);
  qemuImg("create", "-q", "-f", "qcow2", "-b", hostFile, "-F", "raw", p("backing.qcow2"));
  const external = p("external.data");
  qemuImg("create", "-q", "-f", "qcow2", "-o", `data_file=${external}`, p("data-file.qcow2"), "1M");
  copyFileSync(hostFile, external);
  writeFileSync(p("host-extent.vmdk"), `# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="monolithicSparse"\n\nRW 2048 SPARSE "${hostFile}"\n`);
  qemuImg("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", p("flat.vmdk"), "1M");
  // An iso whose unused first 32 KiB is a qcow2 header (with a backing file: qemu would read the host file).
  const polyglot = Buffer.alloc(MiB);
  readFileSync(p("backing.qcow2")).copy(polyglot, 0, 0, 4096);
  polyglot[0x8000] = 1;
  polyglot.write("CD001", 0x8001, "latin1");
  polyglot[0x8006] = 1;
  polyglot[0x8800] = 0xff;
  polyglot.write("CD001", 0x8801, "latin1");
  polyglot[0x8806] = 1;
  writeFileSync(p("iso-qcow2.img"), polyglot);
  copyFileSync(p("backing.qcow2"), p("backing-gz.qcow2"));
  execFileSync("gzip", ["-q", "-f", p("backing-gz.qcow2")]);
  return [
    { name: "qcow2 with a backing file (a host file)", path: p("backing.qcow2"), check: "qcow2.backing_file" },
    { name: "qcow2 with an external data file", path: p("data-file.qcow2"), check: "qcow2.data_file" },
    { name: "vmdk descriptor whose extent is a host file", path: p("host-extent.vmdk"), check: "vmdk.extents" },
    { name: "vmdk monolithicFlat (its data in another file)", path: p("flat.vmdk"), check: "vmdk.create_type" },
    { name: "a qcow2/iso polyglot", path: p("iso-qcow2.img"), check: "polyglot" },
    { name: "a gzip-compressed qcow2 with a backing file", path: p("backing-gz.qcow2.gz"), check: "qcow2.backing_file" },
  ];
}

/** Every file under `dir` that holds the host file's bytes (none may: no volume, no leftover). */
export function filesHolding(dir: string, mark: Buffer, skip: (path: string) => boolean = () => false): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      const st = statSync(path);
      if (st.isDirectory()) walk(path);
      else if (st.isFile() && !skip(path) && readFileSync(path).includes(mark)) out.push(path);
    }
  };
  walk(dir);
  return out;
}
