import { crc32 } from "node:zlib";
import { BackendError } from "../../util/errors";
import type { BlockCache } from "./cache";
import { logKey } from "./layout";
import { locSeq, locSlot, ZERO_ALLOC, ZERO_HOLE, type VolumeState } from "./state";
import type { ObjectStore } from "./store";

// Reads blocks of one state of a volume. The map says where each block's bytes are; what is
// read from the store comes in lines of 64 KiB of a record (a line is the unit of the cache and
// of the ranged GETs: lines next to each other in one record come in one GET); unmapped blocks
// of a clone come from its parent as the parent was when the clone was made. A reader going
// forward gets the next lines of the record fetched ahead, in the background.

export type BlockStatus = "data" | "hole" | "zero";

/** Blocks [start, end) that all read the same way. */
export interface StatusRun {
  start: number;
  end: number;
  status: BlockStatus;
}

/** Appends a run, merged with the last one when they touch and agree. */
export function pushRun(out: StatusRun[], start: number, end: number, status: BlockStatus): void {
  if (end <= start) return;
  const last = out[out.length - 1];
  if (last && last.end === start && last.status === status) last.end = end;
  else out.push({ start, end, status });
}

const LINE_BYTES = 64 * 1024;
/** How many GETs one read keeps in flight. */
const PARALLEL_GETS = 16;
/** The most one GET asks for. */
const MAX_GET_BYTES = 8 * 1024 * 1024;
/** Read-ahead grows from one GET's worth to this, while the reader keeps going forward. */
const MAX_READ_AHEAD_BYTES = 16 * 1024 * 1024;

export class BlockReader {
  private lastEnd = -1;
  private ahead = 0;
  /** Lines being fetched now, so that a read of one waits for it instead of asking again. */
  private readonly inflight = new Map<string, Promise<Buffer>>();
  private readonly lineSlots: number;

  constructor(
    private readonly store: ObjectStore,
    readonly state: VolumeState,
    private readonly cache: BlockCache,
    private parent?: BlockReader,
  ) {
    this.lineSlots = Math.max(1, Math.floor(LINE_BYTES / state.blockSize));
  }

  get parentReader(): BlockReader | undefined {
    return this.parent;
  }

  /** The volume was flattened: nothing reads through any more. */
  dropParent(): void {
    this.parent = undefined;
  }

  private lineKey(seq: number, line: number): string {
    return `${this.state.volumeId}/${seq}/${line}`;
  }

  /** How a block reads: its own data, a hole, zeroes; a clone's unmapped blocks as the parent's. */
  status(block: number): BlockStatus {
    const loc = this.state.map.get(block);
    if (loc === undefined) {
      if (this.showsParent(block)) return (this.parent as BlockReader).status(block);
      return "hole";
    }
    if (loc === ZERO_HOLE) return "hole";
    if (loc === ZERO_ALLOC) return "zero";
    return "data";
  }

  /** How blocks [first, end) read, as runs; stretches with nothing mapped are skipped a page at a time. */
  statusRuns(first: number, end: number): StatusRun[] {
    const out: StatusRun[] = [];
    for (let b = first; b < end; ) {
      const next = this.state.map.nextSet(b, end);
      if (next > b) {
        this.unmappedRuns(b, next, out);
        b = next;
        continue;
      }
      const loc = this.state.map.get(b) as number;
      pushRun(out, b, b + 1, loc === ZERO_HOLE ? "hole" : loc === ZERO_ALLOC ? "zero" : "data");
      b++;
    }
    return out;
  }

  /** An unmapped block of a clone reads its parent's, unless the clone trimmed it or grew past it. */
  private showsParent(block: number): boolean {
    return this.parent !== undefined && block < this.parent.state.blocks && !this.state.hidden.has(block);
  }

  /** Runs of an unmapped stretch: the parent's where it shows through, holes elsewhere. */
  private unmappedRuns(start: number, end: number, out: StatusRun[]): void {
    const parent = this.parent;
    if (!parent) return pushRun(out, start, end, "hole");
    for (let b = start; b < end; ) {
      const { inside, end: edge } = this.state.hidden.around(b);
      const stop = Math.min(end, edge);
      if (inside) pushRun(out, b, stop, "hole");
      else {
        const parentEnd = Math.min(stop, parent.state.blocks);
        if (b < parentEnd) for (const r of parent.statusRuns(b, parentEnd)) pushRun(out, r.start, r.end, r.status);
        pushRun(out, Math.max(b, parentEnd), stop, "hole");
      }
      b = stop;
    }
  }

  /** A record just committed: its lines are cached from the body that went up, so reading back costs no GET. */
  remember(seq: number, body: Buffer, dataStart: number, blocks: number): void {
    const lineBytes = this.lineSlots * this.state.blockSize;
    const end = dataStart + blocks * this.state.blockSize;
    for (let i = 0; dataStart + i * lineBytes < end; i++) {
      this.cache.set(this.lineKey(seq, i), body.subarray(dataStart + i * lineBytes, Math.min(end, dataStart + (i + 1) * lineBytes)));
    }
  }

  /**
   * The bytes of each block (a full block each), or null for a block that reads as zeroes.
   * `blocks` must be sorted.
   */
  async read(blocks: number[]): Promise<Map<number, Buffer | null>> {
    const out = new Map<number, Buffer | null>();
    const fromParent: number[] = [];
    const wanted: Array<{ block: number; seq: number; slot: number }> = [];
    for (const block of blocks) {
      const loc = this.state.map.get(block);
      if (loc === undefined) {
        if (this.showsParent(block)) fromParent.push(block);
        else out.set(block, null);
      } else if (loc < 0) out.set(block, null);
      else wanted.push({ block, seq: locSeq(loc), slot: locSlot(loc) });
    }
    const lines = await this.lines(wanted);
    const bs = this.state.blockSize;
    for (const w of wanted) {
      const line = lines.get(this.lineKey(w.seq, Math.floor(w.slot / this.lineSlots))) as Buffer;
      const at = (w.slot % this.lineSlots) * bs;
      if (line.length < at + bs) throw new BackendError(`volume ${this.state.volumeId}: record ${w.seq} is shorter than its header says`);
      out.set(w.block, this.verified(w.block, line.subarray(at, at + bs), logKey(this.state.volumeId, w.seq)));
    }
    const sequential = blocks.length > 0 && blocks[0] === this.lastEnd;
    if (blocks.length) this.lastEnd = blocks[blocks.length - 1] + 1;
    const last = wanted[wanted.length - 1];
    if (sequential && last) this.readAhead(last.seq, Math.floor(last.slot / this.lineSlots) + 1);
    else this.ahead = 0;
    if (fromParent.length && this.parent) for (const [b, data] of await this.parent.read(fromParent)) out.set(b, data);
    return out;
  }

  /** The lines the blocks are in: cached, being fetched, or fetched now (neighbours in one GET). */
  private async lines(wanted: Array<{ seq: number; slot: number }>): Promise<Map<string, Buffer>> {
    const got = new Map<string, Buffer>();
    const waits: Array<Promise<void>> = [];
    const missing: Array<{ seq: number; first: number; count: number }> = [];
    const maxLines = Math.max(1, Math.floor(MAX_GET_BYTES / (this.lineSlots * this.state.blockSize)));
    for (const w of wanted) {
      const line = Math.floor(w.slot / this.lineSlots);
      const key = this.lineKey(w.seq, line);
      if (got.has(key)) continue;
      const cached = this.cache.get(key);
      if (cached) {
        got.set(key, cached);
        continue;
      }
      const pending = this.inflight.get(key);
      if (pending) {
        got.set(key, Buffer.alloc(0));
        const wait = pending.then((b) => void got.set(key, b));
        wait.catch(() => undefined); // awaited below; a failed read of ours may end this call first
        waits.push(wait);
        continue;
      }
      got.set(key, Buffer.alloc(0));
      const run = missing[missing.length - 1];
      if (run && run.seq === w.seq && run.first + run.count === line && run.count < maxLines) run.count++;
      else missing.push({ seq: w.seq, first: line, count: 1 });
    }
    let next = 0;
    const worker = async () => {
      while (next < missing.length) {
        const run = missing[next++];
        const lines = await this.fetchLines(run.seq, run.first, run.count);
        lines.forEach((line, i) => got.set(this.lineKey(run.seq, run.first + i), line));
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL_GETS, missing.length) }, worker));
    await Promise.all(waits);
    return got;
  }

  /** One ranged GET for `count` lines of a record, cached line by line. */
  private fetchLines(seq: number, first: number, count: number): Promise<Buffer[]> {
    const info = this.state.records.get(seq);
    if (!info) return Promise.reject(new BackendError(`volume ${this.state.volumeId}: the map points into record ${seq}, which it does not know`));
    const bs = this.state.blockSize;
    const lineBytes = this.lineSlots * bs;
    const slots = Math.min(count * this.lineSlots, info.blocks - first * this.lineSlots);
    const key = logKey(this.state.volumeId, seq);
    const fetch = (async () => {
      const bytes = await this.store.get(key, { offset: info.dataStart + first * lineBytes, length: slots * bs });
      if (!bytes) {
        throw new BackendError(`volume ${this.state.volumeId}: ${key} is missing from ${this.store.where}`, {
          hint: "the volume's objects were removed behind kindling's back; its data is lost",
        });
      }
      const lines: Buffer[] = [];
      for (let i = 0; i < count; i++) {
        const line = bytes.subarray(i * lineBytes, (i + 1) * lineBytes);
        this.cache.set(this.lineKey(seq, first + i), line);
        lines.push(line);
      }
      return lines;
    })();
    for (let i = 0; i < count; i++) {
      const k = this.lineKey(seq, first + i);
      const one = fetch.then((lines) => lines[i]);
      one.catch(() => undefined);
      this.inflight.set(k, one);
      void fetch.finally(() => this.inflight.delete(k)).catch(() => undefined);
    }
    return fetch;
  }

  /** Fetches the record's next lines in the background, a window that doubles while reads go forward. */
  private readAhead(seq: number, fromLine: number): void {
    const info = this.state.records.get(seq);
    if (!info) return;
    const lineBytes = this.lineSlots * this.state.blockSize;
    const totalLines = Math.ceil(info.blocks / this.lineSlots);
    this.ahead = Math.min(MAX_READ_AHEAD_BYTES, Math.max(lineBytes * 16, this.ahead * 2));
    const end = Math.min(totalLines, fromLine + Math.ceil(this.ahead / lineBytes));
    let first = -1;
    const flush = (stop: number) => {
      if (first >= 0) void this.fetchLines(seq, first, stop - first).catch(() => undefined);
      first = -1;
    };
    for (let line = fromLine; line < end; line++) {
      const key = this.lineKey(seq, line);
      if (this.cache.get(key) || this.inflight.has(key)) flush(line);
      else if (first < 0) first = line;
    }
    flush(end);
  }

  /** Every block is checked against the CRC its record gave, wherever it came from. */
  private verified(block: number, data: Buffer, from: string): Buffer {
    const expected = this.state.crcs.get(block);
    if (expected !== undefined && crc32(data) !== expected) {
      throw new BackendError(`volume ${this.state.volumeId}: block ${block} from ${from} fails its checksum`, { hint: "the stored object is damaged" });
    }
    return data;
  }
}
