// Formats detected only so they can be refused by name (notes: qed and luks are banned), instead
// of being taken for raw and streamed into a volume that qemu could later re-read as them.
import { hasBytes, safeNumber, u64le } from "./bytes";
import type { FormatProbe } from "./types";

export const qedProbe: FormatProbe = {
  format: "qed",
  matches: (view) => hasBytes(view.prefix, 0, "QED\0"),
  virtualSize: (view) => safeNumber(u64le(view.prefix, 48)),
  checks: [],
};

export const luksProbe: FormatProbe = {
  format: "luks",
  matches: (view) => hasBytes(view.prefix, 0, Buffer.from("LUKS\xba\xbe", "latin1")),
  checks: [],
};
