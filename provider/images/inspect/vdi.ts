// VirtualBox VDI: magic at 0x40, the disk size at 0x170. Only normal (dynamic) and fixed images
// are accepted; undo and differencing images depend on another file.
import { safeNumber, u32le, u64le } from "./bytes";
import type { FormatProbe } from "./types";

const SIGNATURE = 0xbeda107f;
const TYPE_NORMAL = 1;
const TYPE_FIXED = 2;

export const vdiProbe: FormatProbe = {
  format: "vdi",
  matches: (view) => u32le(view.prefix, 0x40) === SIGNATURE,
  virtualSize: (view) => safeNumber(u64le(view.prefix, 0x170)),
  details: (view) => ({ vdiImageType: u32le(view.prefix, 0x4c) }),
  checks: [
    {
      name: "vdi.image_type",
      run: (view) => {
        const type = u32le(view.prefix, 0x4c);
        return type === TYPE_NORMAL || type === TYPE_FIXED ? undefined : `image type ${type} is neither normal nor fixed`;
      },
    },
  ],
};
