// VHD (qemu's "vpc"). A dynamic VHD copies its footer to offset 0; a fixed one has it only in the
// last 512 bytes, so the inspector keeps the image's tail for this probe. A differencing VHD has
// a parent (a backing file) and is refused.
import { hasBytes, safeNumber, u16be, u32be, u64be, u8 } from "./bytes";
import type { FormatProbe, ImageView } from "./types";

const COOKIE = "conectix";
const FOOTER = 512;
const DISK_FIXED = 2;
const DISK_DYNAMIC = 3;
const DISK_DIFFERENCING = 4;
/** CHS at its maximum means the geometry cannot hold the size, and qemu uses current_size instead. */
const MAX_CHS_SECTORS = 65535 * 16 * 255;
// Creator applications whose images qemu sizes by current_size rather than by CHS geometry
// (block/vpc.c); the virtual size must be computed the way qemu will, or the cross-check fails.
const CURRENT_SIZE_CREATORS = ["win ", "qem2", "d2v ", "CTXS", "tap\0"];

/** The footer qemu will use: the copy at offset 0 when present, else the one at the end. */
function footer(view: ImageView): Buffer | undefined {
  if (hasBytes(view.prefix, 0, COOKIE)) return view.prefix.subarray(0, FOOTER);
  const size = view.totalSize;
  if (size === undefined || size < FOOTER) return undefined;
  const end = view.read(size - FOOTER, FOOTER);
  return end && hasBytes(end, 0, COOKIE) ? end : undefined;
}

export const vhdProbe: FormatProbe = {
  format: "vhd",
  matches: (view) => footer(view) !== undefined,
  virtualSize: (view) => {
    const f = footer(view);
    if (!f) return undefined;
    const chs = (u16be(f, 56) ?? 0) * (u8(f, 58) ?? 0) * (u8(f, 59) ?? 0);
    const creator = f.subarray(28, 32).toString("latin1");
    const current = safeNumber(u64be(f, 48));
    if (CURRENT_SIZE_CREATORS.includes(creator) || chs === MAX_CHS_SECTORS) return current === undefined ? undefined : Math.floor(current / 512) * 512;
    return chs * 512;
  },
  details: (view) => ({ vhdDiskType: u32be(footer(view), 60), vhdFooterAtStart: hasBytes(view.prefix, 0, COOKIE) }),
  checks: [
    {
      name: "vhd.disk_type",
      run: (view) => {
        const type = u32be(footer(view), 60);
        if (type === DISK_DIFFERENCING) return "the image is a differencing disk whose data is in a parent file";
        return type === DISK_FIXED || type === DISK_DYNAMIC ? undefined : `disk type ${type} is neither fixed nor dynamic`;
      },
    },
  ],
};
