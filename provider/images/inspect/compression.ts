// Compression by magic, never by name or header: a compressed stream is reported as such so the
// caller decompresses it and inspects the inner bytes; it is never a disk format itself.
import { hasBytes } from "./bytes";
import type { DetectedFormat, FormatProbe } from "./types";

function magicProbe(format: DetectedFormat, test: (b: Buffer) => boolean): FormatProbe {
  return { format, matches: (view) => test(view.prefix), checks: [] };
}

export const compressionProbes: FormatProbe[] = [
  magicProbe("gzip", (b) => hasBytes(b, 0, Buffer.from([0x1f, 0x8b, 0x08]))),
  magicProbe("xz", (b) => hasBytes(b, 0, Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))),
  magicProbe("zstd", (b) => hasBytes(b, 0, Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))),
  // "BZh" and a block size digit, then a block (pi) or end-of-stream (sqrt pi) magic: three
  // letters alone are too common in raw data to call a disk compressed.
  magicProbe(
    "bzip2",
    (b) =>
      hasBytes(b, 0, "BZh") &&
      b.length >= 10 &&
      b[3] >= 0x31 &&
      b[3] <= 0x39 &&
      (hasBytes(b, 4, Buffer.from([0x31, 0x41, 0x59, 0x26, 0x53, 0x59])) || hasBytes(b, 4, Buffer.from([0x17, 0x72, 0x45, 0x38, 0x50, 0x90]))),
  ),
];
