import { crc32 } from "node:zlib";
import { Intervals } from "./intervals";

// Writes not yet committed, block by block. The newest write to a block replaces what an
// older one left (writes are coalesced before they go up); a write that covers only part of a
// block keeps a mask of the 512-byte sectors it set, and the rest is filled from the committed
// state when the block is committed, never on the write's own path.

export const SECTOR = 512;

export type Dirty =
  /** `crc`: of a whole block, computed as it arrives (off the commit's path). */
  | { kind: "data"; buf: Buffer; mask?: Uint8Array; crc?: number }
  | { kind: "unmap" }
  | { kind: "zero" };

export class DirtySet {
  readonly blocks = new Map<number, Dirty>();
  /** Ranges trimmed since; a block entry (newer) wins over a range it falls in. */
  readonly unmapped = new Intervals();
  /** performance.now() of the oldest write here. */
  since = 0;
  /** The commit id of the record this set goes up as, fixed at its first attempt. */
  commitId?: string;
  /** The newest local journal entry in this set (durability local). */
  maxJseq?: number;

  constructor(readonly blockSize: number) {}

  /** Blocks with an entry of their own (what a record must carry one by one). */
  get size(): number {
    return this.blocks.size;
  }

  get isEmpty(): boolean {
    return this.blocks.size === 0 && this.unmapped.empty;
  }

  get bytes(): number {
    return this.blocks.size * this.blockSize;
  }

  private touch(): void {
    if (this.isEmpty) this.since = performance.now();
  }

  /** Blocks [start, end) trimmed: one range, whatever its length; older entries in it go. */
  unmapRange(start: number, end: number): void {
    this.touch();
    if (this.blocks.size < end - start) {
      for (const b of [...this.blocks.keys()]) if (b >= start && b < end) this.blocks.delete(b);
    } else for (let b = start; b < end; b++) this.blocks.delete(b);
    this.unmapped.add(start, end);
  }

  /** What the set says of a block: an entry, "unmap" for a trimmed range, or nothing. */
  lookup(block: number): Dirty | undefined {
    return this.blocks.get(block) ?? (this.unmapped.has(block) ? { kind: "unmap" } : undefined);
  }

  /**
   * Whole block of data. The caller's buffer is copied (NBD reuses its buffers) unless it is
   * `owned`: a view into a copy the writer made for a run of blocks.
   */
  setFull(block: number, data: Buffer, owned = false): void {
    this.touch();
    const buf = owned ? data : Buffer.allocUnsafe(data.length);
    if (!owned) data.copy(buf);
    this.blocks.set(block, { kind: "data", buf, crc: crc32(buf) });
  }

  setEmpty(block: number, kind: "unmap" | "zero"): void {
    this.touch();
    this.blocks.set(block, { kind });
  }

  /**
   * Part of a block, sector-aligned, at `at` within it. Returns false when the write is not
   * sector-aligned and the block has no full copy here: the caller reads the block first.
   */
  setPart(block: number, at: number, data: Buffer): boolean {
    const aligned = at % SECTOR === 0 && data.length % SECTOR === 0;
    const cur = this.lookup(block);
    if (cur?.kind === "data" && !cur.mask) {
      data.copy(cur.buf, at);
      cur.crc = undefined;
      return true;
    }
    if (cur && cur.kind !== "data") {
      // Zeroes with new bytes over them: the block is whole now.
      const buf = Buffer.alloc(this.blockSize);
      data.copy(buf, at);
      this.blocks.set(block, { kind: "data", buf });
      return true;
    }
    if (!aligned) return false;
    this.touch();
    const entry = cur ?? { kind: "data" as const, buf: Buffer.alloc(this.blockSize), mask: new Uint8Array(this.blockSize / SECTOR) };
    data.copy(entry.buf, at);
    if (entry.mask) {
      entry.mask.fill(1, at / SECTOR, (at + data.length) / SECTOR);
      if (entry.mask.every((m) => m === 1)) entry.mask = undefined;
    }
    this.blocks.set(block, entry);
    return true;
  }
}

/** `newer` over `older`, for one block: what a write over an uncommitted one leaves. */
export function overlay(older: Dirty, newer: Dirty, blockSize: number): Dirty {
  if (newer.kind !== "data" || !newer.mask) return newer;
  const base = older.kind === "data" ? Buffer.from(older.buf) : Buffer.alloc(blockSize);
  for (let s = 0; s < newer.mask.length; s++) if (newer.mask[s]) newer.buf.copy(base, s * SECTOR, s * SECTOR, (s + 1) * SECTOR);
  if (older.kind === "data" && older.mask) {
    const mask = Uint8Array.from(older.mask, (m, i) => m | newer.mask![i]);
    return { kind: "data", buf: base, mask: mask.every((m) => m === 1) ? undefined : mask };
  }
  return { kind: "data", buf: base };
}

/** A partial block's bytes over its base (the block as the state below has it). */
export function fill(entry: Dirty & { kind: "data" }, base: Buffer | null, blockSize: number): Buffer {
  if (!entry.mask) return entry.buf;
  const out = base ? Buffer.from(base) : Buffer.alloc(blockSize);
  for (let s = 0; s < entry.mask.length; s++) if (entry.mask[s]) entry.buf.copy(out, s * SECTOR, s * SECTOR, (s + 1) * SECTOR);
  return out;
}
