// Compression by magic, never by name or header: a compressed stream is reported as such so the
// caller decompresses it and inspects the inner bytes; it is never a disk format itself.
import { hasBytes } from "./bytes";
import type { DetectedFormat, FormatProbe } from "./types";

export type Compression = "gzip" | "xz" | "zstd" | "bzip2";

/** The most bytes the tests below look at. */
export const COMPRESSION_MAGIC_BYTES = 10;

const MAGIC: Array<[Compression, (b: Buffer) => boolean]> = [
  ["gzip", (b) => hasBytes(b, 0, Buffer.from([0x1f, 0x8b, 0x08]))],
  ["xz", (b) => hasBytes(b, 0, Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))],
  ["zstd", (b) => hasBytes(b, 0, Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))],
  // "BZh" and a block size digit, then a block (pi) or end-of-stream (sqrt pi) magic: three
  // letters alone are too common in raw data to call a disk compressed.
  [
    "bzip2",
    (b) =>
      hasBytes(b, 0, "BZh") &&
      b.length >= 10 &&
      b[3] >= 0x31 &&
      b[3] <= 0x39 &&
      (hasBytes(b, 4, Buffer.from([0x31, 0x41, 0x59, 0x26, 0x53, 0x59])) || hasBytes(b, 4, Buffer.from([0x17, 0x72, 0x45, 0x38, 0x50, 0x90]))),
  ],
];

/** The compression `head` (an image's first bytes) starts with, if any. */
export function compressionOf(head: Buffer): Compression | undefined {
  return MAGIC.find(([, test]) => test(head))?.[0];
}

export const compressionProbes: FormatProbe[] = MAGIC.map(([format, test]) => ({ format: format as DetectedFormat, matches: (view) => test(view.prefix), checks: [] }));
