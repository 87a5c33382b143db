// qcow2 (and qcow v1) detection and the checks behind CVE-2011-3147, CVE-2015-5163 and
// CVE-2024-32498: a qcow2 may name other files (a backing file, an external data file) that
// qemu-img would open and read as if they were the image, so those are refused from the header,
// before qemu ever sees it.
import { hasBytes, safeNumber, u32be, u64be } from "./bytes";
import type { FormatProbe, ImageView } from "./types";

const MAGIC = Buffer.from("QFI\xfb", "latin1");
const V2_HEADER_LENGTH = 72;
const EXT_END = 0x00000000;
const EXT_DATA_FILE = 0x44415441;

// Incompatible feature bits (qcow2 spec): 0 dirty, 1 corrupt, 2 external data file, 3 compression
// type, 4 extended L2 entries. Any other bit is a feature qemu might interpret in ways this
// inspector cannot foresee, so it is refused rather than guessed at.
const INCOMPAT_DATA_FILE = 1n << 2n;
const INCOMPAT_KNOWN = (1n << 0n) | (1n << 1n) | INCOMPAT_DATA_FILE | (1n << 3n) | (1n << 4n);

function version(view: ImageView): number | undefined {
  return hasBytes(view.prefix, 0, MAGIC) ? u32be(view.prefix, 4) : undefined;
}

function incompatibleFeatures(view: ImageView): bigint {
  return version(view) === 3 ? (u64be(view.prefix, 72) ?? 0n) : 0n;
}

/** The header extensions as (type, length) pairs, or a reason the list cannot be read. */
function extensions(view: ImageView): { types: number[]; error?: string } {
  const v = version(view);
  const start = v === 3 ? u32be(view.prefix, 100) : V2_HEADER_LENGTH;
  const clusterBits = u32be(view.prefix, 20);
  if (start === undefined || clusterBits === undefined) return { types: [], error: "the header is truncated" };
  // Extensions live in the first cluster; a list running past it (or past the held prefix) is
  // not one qemu would read the same way, so it is an error rather than "no extensions".
  const limit = Math.min(2 ** Math.min(clusterBits, 21), view.prefix.length);
  const types: number[] = [];
  let off = start;
  for (let i = 0; i < 1024; i++) {
    const type = u32be(view.prefix, off);
    const len = u32be(view.prefix, off + 4);
    if (type === undefined || len === undefined || off + 8 > limit) return { types, error: "the header extensions run past the first cluster" };
    if (type === EXT_END) return { types };
    types.push(type);
    off += 8 + Math.ceil(len / 8) * 8;
    if (off > limit) return { types, error: "a header extension runs past the first cluster" };
  }
  return { types, error: "too many header extensions" };
}

export const qcow2Probe: FormatProbe = {
  format: "qcow2",
  // Any version but 1 is taken as qcow2 so that an unknown version is refused by name (below)
  // instead of falling through to raw, where qemu's own probe might still read it as qcow2.
  matches: (view) => {
    const v = version(view);
    return v !== undefined && v !== 1;
  },
  virtualSize: (view) => safeNumber(u64be(view.prefix, 24)),
  details: (view) => ({ qcow2Version: version(view), incompatibleFeatures: `0x${incompatibleFeatures(view).toString(16)}` }),
  checks: [
    {
      name: "qcow2.version",
      run: (view) => {
        const v = version(view);
        return v === 2 || v === 3 ? undefined : `qcow2 version ${v} is not one this inspector knows (2 or 3)`;
      },
    },
    {
      name: "qcow2.backing_file",
      run: (view) => {
        const offset = u64be(view.prefix, 8);
        if (offset === undefined) return "the header is truncated";
        if (offset === 0n) return undefined;
        const size = u32be(view.prefix, 16) ?? 0;
        const at = safeNumber(offset);
        const name = at !== undefined && size > 0 && size <= 1023 ? view.read(at, size)?.toString("latin1") : undefined;
        return `the image names a backing file${name ? ` (${JSON.stringify(name)})` : ""}; qemu would read it as part of the disk`;
      },
    },
    {
      name: "qcow2.data_file",
      run: (view) => {
        if ((incompatibleFeatures(view) & INCOMPAT_DATA_FILE) !== 0n) return "the external data file feature bit is set; qemu would read the disk's data from another file";
        if (extensions(view).types.includes(EXT_DATA_FILE)) return "the header has an external data file extension";
        return undefined;
      },
    },
    {
      name: "qcow2.unknown_features",
      run: (view) => {
        const unknown = incompatibleFeatures(view) & ~INCOMPAT_KNOWN;
        if (unknown !== 0n) return `unknown incompatible feature bits 0x${unknown.toString(16)} are set`;
        const ext = extensions(view);
        return ext.error;
      },
    },
    {
      // An encrypted qcow2 needs a key kindling does not take yet; refusing it keeps the crypto
      // layer (and its own header parsing) out of reach of an untrusted image.
      name: "qcow2.encryption",
      run: (view) => ((u32be(view.prefix, 32) ?? 0) !== 0 ? "the image is encrypted" : undefined),
    },
  ],
};

/** qcow version 1: an obsolete format the allowlist bans; detected so it is named, not taken for raw. */
export const qcowV1Probe: FormatProbe = {
  format: "qcow",
  matches: (view) => version(view) === 1,
  virtualSize: (view) => safeNumber(u64be(view.prefix, 24)),
  checks: [],
};
