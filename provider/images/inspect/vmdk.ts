// vmdk detection and the checks behind CVE-2022-47951 and CVE-2024-40767: a vmdk descriptor lists
// extents by file name, and qemu opens those files; a FLAT extent naming a host path hands that
// file's bytes to whoever reads the image. Only single-file sparse vmdks (monolithicSparse,
// streamOptimized) whose one extent is the file itself pass, and every descriptor line must be
// one this parser understands, so nothing it skipped can change what qemu does.
import { hasBytes, safeNumber, u32le, u64le } from "./bytes";
import type { FormatProbe, ImageView, Region } from "./types";

const SPARSE_MAGIC = "KDMV";
const COWD_MAGIC = "COWD"; // the old hosted sparse format: detected so it is refused by name
const SECTOR = 512;
const GD_AT_END = 0xffffffffffffffffn;
/** A descriptor larger than this is refused: real ones are a few hundred bytes. */
export const MAX_DESCRIPTOR_BYTES = 1 << 20;
export const DEFAULT_VMDK_TYPES = ["monolithicSparse", "streamOptimized"];

interface Descriptor {
  createType?: string;
  extents: { access: string; sectors: number; type: string; file: string; offset?: number }[];
  parentHint?: string;
  parentCid?: string;
  /** Lines this parser does not understand. */
  unknown: string[];
}

const EXTENT_LINE = /^(RW|RDONLY|NOACCESS)\s+(\d+)\s+([A-Z]+)(?:\s+"([^"]*)"(?:\s+(\d+))?)?\s*$/;
const KEY_VALUE = /^([A-Za-z][\w.]*)\s*=\s*(?:"([^"]*)"|(\S*))\s*$/;

export function parseDescriptor(text: string): Descriptor {
  const d: Descriptor = { extents: [], unknown: [] };
  for (const rawLine of text.split(/\r?\n/)) {
    const line = rawLine.replace(/\0+$/, "").trim();
    if (line === "" || line.startsWith("#")) continue;
    const ext = EXTENT_LINE.exec(line);
    if (ext) {
      d.extents.push({ access: ext[1], sectors: Number(ext[2]), type: ext[3], file: ext[4] ?? "", offset: ext[5] === undefined ? undefined : Number(ext[5]) });
      continue;
    }
    const kv = KEY_VALUE.exec(line);
    if (kv) {
      const key = kv[1];
      const value = kv[2] ?? kv[3] ?? "";
      if (key === "createType") d.createType = value;
      else if (key === "parentFileNameHint") d.parentHint = value;
      else if (key === "parentCID") d.parentCid = value.toLowerCase();
      else if (!(key === "version" || key === "CID" || key === "encoding" || key.startsWith("ddb."))) d.unknown.push(line);
      continue;
    }
    d.unknown.push(line);
  }
  return d;
}

function isSparse(view: ImageView): boolean {
  return hasBytes(view.prefix, 0, SPARSE_MAGIC);
}

/** A standalone text descriptor: the whole file is the descriptor, and its data is elsewhere. */
function isTextDescriptor(view: ImageView): boolean {
  const head = view.prefix.subarray(0, Math.min(view.prefix.length, 4096)).toString("latin1");
  if (!/^(# Disk DescriptorFile|\s*version\s*=)/.test(head)) return false;
  return /(^|\n)\s*createType\s*=/.test(head) || /(^|\n)\s*(RW|RDONLY|NOACCESS)\s+\d+\s+[A-Z]+/.test(head);
}

function descriptorRegion(view: ImageView): Region | undefined {
  if (!isSparse(view)) return undefined;
  const offset = safeNumber(u64le(view.prefix, 28));
  const size = safeNumber(u64le(view.prefix, 36));
  if (offset === undefined || size === undefined || offset === 0 || size === 0) return undefined;
  if (size * SECTOR > MAX_DESCRIPTOR_BYTES || offset > 2 ** 40) return undefined;
  return { offset: offset * SECTOR, length: size * SECTOR };
}

function descriptorText(view: ImageView): string | undefined {
  if (isTextDescriptor(view)) return view.prefix.subarray(0, MAX_DESCRIPTOR_BYTES).toString("latin1");
  const region = descriptorRegion(view);
  return region ? view.read(region.offset, region.length)?.toString("latin1") : undefined;
}

function descriptor(view: ImageView): Descriptor | undefined {
  const text = descriptorText(view);
  return text === undefined ? undefined : parseDescriptor(text);
}

function footerNeeded(view: ImageView): boolean {
  return isSparse(view) && u64le(view.prefix, 56) === GD_AT_END;
}

/** A vmdk probe whose createType allowlist is the policy's (the default is Cinder's). */
export function vmdkProbe(allowedTypes: readonly string[] = DEFAULT_VMDK_TYPES): FormatProbe {
  return {
    format: "vmdk",
    needs: (view) => {
      const out: Region[] = [];
      const region = descriptorRegion(view);
      if (region) out.push(region);
      return out;
    },
    matches: (view) => isSparse(view) || hasBytes(view.prefix, 0, COWD_MAGIC) || isTextDescriptor(view),
    virtualSize: (view) => {
      if (isSparse(view)) {
        const sectors = safeNumber(u64le(view.prefix, 12));
        return sectors === undefined ? undefined : sectors * SECTOR;
      }
      const d = descriptor(view);
      return d && d.extents.length ? d.extents.reduce((sum, e) => sum + e.sectors, 0) * SECTOR : undefined;
    },
    details: (view) => ({ vmdkCreateType: descriptor(view)?.createType, vmdkTextDescriptor: isTextDescriptor(view) }),
    checks: [
      {
        // A descriptor without the sparse header around it names its data in other files; even
        // if they are "ours", qemu resolves them relative to wherever the image sits.
        name: "vmdk.descriptor_file",
        run: (view) => (isTextDescriptor(view) ? "the image is a text descriptor whose data lives in other files" : undefined),
      },
      {
        name: "vmdk.descriptor",
        run: (view) => {
          if (hasBytes(view.prefix, 0, COWD_MAGIC)) return "the image is the obsolete COWD sparse format";
          if (isSparse(view)) {
            const version = u32le(view.prefix, 4);
            if (version === undefined || version < 1 || version > 3) return `sparse header version ${version} is not 1-3`;
            if (!descriptorRegion(view)) return "the sparse header has no embedded descriptor (or one larger than 1 MiB)";
          }
          const d = descriptor(view);
          if (!d) return "the embedded descriptor was not seen";
          if (d.unknown.length) return `the descriptor has lines this inspector does not understand: ${JSON.stringify(d.unknown.slice(0, 3))}`;
          return undefined;
        },
      },
      {
        name: "vmdk.create_type",
        run: (view) => {
          const type = descriptor(view)?.createType;
          return type !== undefined && allowedTypes.includes(type) ? undefined : `createType ${JSON.stringify(type ?? null)} is not allowed (allowed: ${allowedTypes.join(", ")})`;
        },
      },
      {
        name: "vmdk.extents",
        run: (view) => {
          const d = descriptor(view);
          if (!d) return "the descriptor was not seen";
          if (d.extents.length !== 1) return `the descriptor lists ${d.extents.length} extents; a single-file vmdk has exactly one`;
          const e = d.extents[0];
          if (e.type !== "SPARSE") return `extent type ${e.type} reads another file (only SPARSE, the file itself, is allowed)`;
          if (e.file === "" || /[/\\]/.test(e.file) || e.file.includes("..") || e.file.includes(":")) return `extent file ${JSON.stringify(e.file)} is not a plain name inside the image`;
          return undefined;
        },
      },
      {
        // A vmdk with a parent is a delta disk whose base qemu opens by the hinted name: a backing file.
        name: "vmdk.parent",
        run: (view) => {
          const d = descriptor(view);
          if (d?.parentHint !== undefined) return `the descriptor names a parent disk ${JSON.stringify(d.parentHint)}`;
          if (d?.parentCid !== undefined && d.parentCid !== "ffffffff") return `the descriptor has a parent (parentCID=${d.parentCid})`;
          return undefined;
        },
      },
      {
        // streamOptimized images put their grain directory in a footer at the end; the footer must
        // agree with the header and the end-of-stream marker must follow, so the header the checks
        // read is the one qemu will use.
        name: "vmdk.footer",
        run: (view) => {
          if (!footerNeeded(view)) return undefined;
          const size = view.totalSize;
          if (size === undefined || size < 3 * SECTOR) return "the image's end (the footer) was not seen";
          const footer = view.read(size - 2 * SECTOR, SECTOR);
          const eos = view.read(size - SECTOR, SECTOR);
          if (!footer || !eos) return "the image's end (the footer) was not seen";
          if (!hasBytes(footer, 0, SPARSE_MAGIC)) return "there is no footer header before the end-of-stream marker";
          if (u64le(footer, 12) !== u64le(view.prefix, 12) || u64le(footer, 20) !== u64le(view.prefix, 20)) return "the footer's capacity or grain size differ from the header's";
          if (u64le(footer, 56) === GD_AT_END) return "the footer does not locate the grain directory";
          if (!eos.equals(Buffer.alloc(SECTOR))) return "the end-of-stream marker is missing";
          return undefined;
        },
      },
    ],
  };
}
