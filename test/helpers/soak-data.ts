import { createHash } from "node:crypto";

// What soak workers write and the checker reads back: blocks that say who wrote them and when,
// with a digest, so a block shows whether it is an acknowledged write, a later one, or damage.

export const SOAK_BLOCK = 4096;
const SLOT_SPAN = 64 * 1024 * 1024;
const BLOCKS_PER_SLOT = 4096;

/** A repeatable stream of numbers in [0, 1) (mulberry32): a seed replays a soak. */
export function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Where a worker's write lands: each slot has its own range, so slots never overwrite each other. */
export function slotOffset(slot: number, seq: number): number {
  return slot * SLOT_SPAN + (seq % BLOCKS_PER_SLOT) * SOAK_BLOCK;
}

export function blockFor(slot: number, generation: number, seq: number): Buffer {
  const block = Buffer.alloc(SOAK_BLOCK, 0x20);
  block.write(JSON.stringify({ slot, generation, seq }), 0, "utf8");
  createHash("sha256").update(block.subarray(0, SOAK_BLOCK - 32)).digest().copy(block, SOAK_BLOCK - 32);
  return block;
}

export type Decoded = { slot: number; generation: number; seq: number } | "zeroes" | "damaged";

export function decodeBlock(block: Buffer): Decoded {
  if (block.every((b) => b === 0)) return "zeroes";
  const digest = createHash("sha256").update(block.subarray(0, SOAK_BLOCK - 32)).digest();
  if (!digest.equals(block.subarray(SOAK_BLOCK - 32))) return "damaged";
  try {
    const text = block.subarray(0, block.indexOf(0x20)).toString("utf8");
    return JSON.parse(text) as { slot: number; generation: number; seq: number };
  } catch {
    return "damaged";
  }
}
