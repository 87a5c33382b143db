import { crc32 } from "node:zlib";

// Blocks that say which write made them: the write's sequence number and the block's number,
// repeated, and a checksum, so a torn, misplaced or foreign block is told from a real one.

export const STAMP_BLOCK = 4096;

export function stamp(seq: number, block: number): Buffer {
  const b = Buffer.alloc(STAMP_BLOCK);
  for (let at = 0; at + 16 <= STAMP_BLOCK - 8; at += 16) {
    b.writeDoubleBE(seq, at);
    b.writeDoubleBE(block, at + 8);
  }
  b.writeUInt32BE(crc32(b.subarray(0, STAMP_BLOCK - 8)), STAMP_BLOCK - 8);
  return b;
}

/** The stamp a block holds: its sequence number, 0 for zeroes, or undefined when torn or foreign. */
export function readStamp(b: Buffer, block: number): number | undefined {
  if (b.every((x) => x === 0)) return 0;
  if (crc32(b.subarray(0, STAMP_BLOCK - 8)) !== b.readUInt32BE(STAMP_BLOCK - 8)) return undefined;
  return b.readDoubleBE(8) === block ? b.readDoubleBE(0) : undefined;
}

