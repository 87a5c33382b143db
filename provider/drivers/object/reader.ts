import { crc32 } from "node:zlib";
import { BackendError } from "../../util/errors";
import type { BlockCache } from "./cache";
import { logKey } from "./layout";
import { locSeq, locSlot, packLoc, ZERO_ALLOC, ZERO_HOLE, type VolumeState } from "./state";
import type { ObjectStore } from "./store";

// Reads blocks of one state of a volume: the map says where each block's bytes are; blocks
// next to each other in one record come in one ranged GET; unmapped blocks of a clone come from
// its parent as the parent was when the clone was made.

/** How many ranged GETs one read keeps in flight. */
const PARALLEL_GETS = 16;
/** A sequential reader gets the next blocks of the same record too, up to this many. */
const READ_AHEAD_BLOCKS = 64;

export type BlockStatus = "data" | "hole" | "zero";

export class BlockReader {
  private lastEnd = -1;

  constructor(
    private readonly store: ObjectStore,
    readonly state: VolumeState,
    private readonly cache: BlockCache,
    private parent?: BlockReader,
  ) {}

  get parentReader(): BlockReader | undefined {
    return this.parent;
  }

  /** The volume was flattened: nothing reads through any more. */
  dropParent(): void {
    this.parent = undefined;
  }

  private cacheKey(loc: number): string {
    return `${this.state.volumeId}/${loc}`;
  }

  /** How a block reads: its own data, a hole, zeroes; a clone's unmapped blocks as the parent's. */
  status(block: number): BlockStatus {
    const loc = this.state.map.get(block);
    if (loc === undefined) {
      if (this.parent && block < this.parent.state.blocks) return this.parent.status(block);
      return "hole";
    }
    if (loc === ZERO_HOLE) return "hole";
    if (loc === ZERO_ALLOC) return "zero";
    return "data";
  }

  /**
   * The bytes of each block (a full block each), or null for a block that reads as zeroes.
   * `blocks` must be sorted.
   */
  async read(blocks: number[]): Promise<Map<number, Buffer | null>> {
    const out = new Map<number, Buffer | null>();
    const fromParent: number[] = [];
    // Runs of blocks stored next to each other in one record: [seq, first slot, blocks...].
    const runs: Array<{ seq: number; slot: number; blocks: number[] }> = [];
    for (const block of blocks) {
      const loc = this.state.map.get(block);
      if (loc === undefined) {
        if (this.parent && block < this.parent.state.blocks) fromParent.push(block);
        else out.set(block, null);
        continue;
      }
      if (loc < 0) {
        out.set(block, null);
        continue;
      }
      const cached = this.cache.get(this.cacheKey(loc));
      if (cached) {
        out.set(block, this.verified(block, cached, "the cache"));
        continue;
      }
      const seq = locSeq(loc);
      const slot = locSlot(loc);
      const last = runs[runs.length - 1];
      if (last && last.seq === seq && last.slot + last.blocks.length === slot) last.blocks.push(block);
      else runs.push({ seq, slot, blocks: [block] });
    }
    const sequential = blocks.length > 0 && blocks[0] === this.lastEnd;
    if (blocks.length) this.lastEnd = blocks[blocks.length - 1] + 1;
    let next = 0;
    const worker = async () => {
      while (next < runs.length) {
        const run = runs[next++];
        await this.fetchRun(run, out, sequential && run === runs[runs.length - 1]);
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL_GETS, runs.length) }, worker));
    if (fromParent.length && this.parent) for (const [b, data] of await this.parent.read(fromParent)) out.set(b, data);
    return out;
  }

  /** A block just committed at `loc`: the next read of it needs no request. */
  remember(loc: number, data: Buffer): void {
    this.cache.set(this.cacheKey(loc), data);
  }

  /** Every block is checked against the CRC its record gave, wherever it came from. */
  private verified(block: number, data: Buffer, from: string): Buffer {
    const expected = this.state.crcs.get(block);
    if (expected !== undefined && crc32(data) !== expected) {
      throw new BackendError(`volume ${this.state.volumeId}: block ${block} from ${from} fails its checksum`, { hint: "the stored object is damaged" });
    }
    return data;
  }

  private async fetchRun(run: { seq: number; slot: number; blocks: number[] }, out: Map<number, Buffer | null>, readAhead: boolean): Promise<void> {
    const info = this.state.records.get(run.seq);
    const key = logKey(this.state.volumeId, run.seq);
    if (!info) throw new BackendError(`volume ${this.state.volumeId}: the map points into record ${run.seq}, which it does not know`);
    const bs = this.state.blockSize;
    // Read-ahead: the record's next slots are likely the next blocks of a sequential writer.
    const extra = readAhead ? READ_AHEAD_BLOCKS : 0;
    const want = run.blocks.length + extra;
    const bytes = await this.store.get(key, { offset: info.dataStart + run.slot * bs, length: want * bs });
    if (!bytes) {
      throw new BackendError(`volume ${this.state.volumeId}: ${key} is missing from ${this.store.where}`, {
        hint: "the volume's objects were removed behind kindling's back; its data is lost",
      });
    }
    if (bytes.length < run.blocks.length * bs) throw new BackendError(`volume ${this.state.volumeId}: ${key} is shorter than its header says`);
    run.blocks.forEach((block, i) => {
      const data = this.verified(block, bytes.subarray(i * bs, (i + 1) * bs), key);
      this.cache.set(this.cacheKey(this.state.map.get(block) as number), data);
      out.set(block, data);
    });
    // Slots past the run are cached by where they are: whatever block they hold (now or in an
    // older state), they are that record's bytes for good.
    for (let i = run.blocks.length; (i + 1) * bs <= bytes.length; i++) {
      this.cache.set(this.cacheKey(packLoc(run.seq, run.slot + i)), bytes.subarray(i * bs, (i + 1) * bs));
    }
  }
}
