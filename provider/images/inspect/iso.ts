// ISO 9660 and UDF: volume descriptors from 32 KiB on. An iso is raw to qemu; it is detected so a
// format hidden in its unused first 32 KiB (a qcow2 header, say) shows up as a polyglot.
import { hasBytes } from "./bytes";
import type { FormatProbe, ImageView } from "./types";

const FIRST_DESCRIPTOR = 16 * 2048;
const DESCRIPTORS_LOOKED_AT = 4;

function isIso(view: ImageView): boolean {
  for (let i = 0; i < DESCRIPTORS_LOOKED_AT; i++) {
    const at = FIRST_DESCRIPTOR + i * 2048 + 1;
    if (hasBytes(view.prefix, at, "CD001") || hasBytes(view.prefix, at, "NSR02") || hasBytes(view.prefix, at, "NSR03")) return true;
  }
  return false;
}

export const isoProbe: FormatProbe = {
  format: "iso",
  matches: isIso,
  // raw to qemu: the virtual size is the file's size
  virtualSize: (view) => view.totalSize,
  checks: [],
};
