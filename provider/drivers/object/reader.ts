import { crc32 } from "node:zlib";
import { BackendError } from "../../util/errors";
import type { BlockCache } from "./cache";
import { logKey } from "./layout";
import { locSeq, locSlot, ZERO_ALLOC, ZERO_HOLE, type VolumeState } from "./state";
import type { ObjectStore } from "./store";
import { StreamTable, type Stream } from "./streams";

// Reads blocks of one state of a volume. The map says where each block's bytes are; what is
// read from the store comes in lines of 64 KiB of a record (a line is the unit of the cache and
// of the ranged GETs: lines next to each other in one record come in one GET); unmapped blocks
// of a clone come from its parent as the parent was when the clone was made.
//
// Reads that go forward (streams.ts tells them, several at once) get what follows them fetched
// ahead in GETs of a few MiB, several in flight: per byte, small GETs cost the store and this
// process many times what large ones do (sequential reads through 4 interleaved connections
// took over 4,000 GETs of 64-256 KiB a GiB when read-ahead followed one position per volume).
// A GET's lines are handed on as its bytes arrive, so a read waits for its own lines only, not
// for the rest of a GET that also fetches ahead. Read-ahead only ever fetches lines by where
// they are stored, which never change, and each block is checked against its CRC when read.

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
/** Sequential streams followed at once in one state (nbdcopy reads through 4 connections). */
const STREAM_SLOTS = 8;
/** Reads in a row a stream needs before it gets read-ahead: a random read is never the third. */
const STREAM_CONFIRM = 2;
/** A stream's read-ahead starts at this far ahead of its read, and doubles with every read that continues it ... */
const FIRST_WINDOW_BYTES = 1024 * 1024;
/** ... up to this (a sixteenth of the cache when that is less: all of the streams' windows fit in half of it). */
const MAX_WINDOW_BYTES = 16 * 1024 * 1024;
/**
 * What one read-ahead GET asks for: the stores serve GETs of MiB at 5-10 times the bytes per
 * second of 64 KiB ones (bench/README.md, "Object stores on this machine"), and smaller GETs
 * than that keep several in flight within a window.
 */
const AHEAD_GET_BYTES = 4 * 1024 * 1024;

interface LineRun {
  seq: number;
  first: number;
  count: number;
}

export class BlockReader {
  /** Lines being fetched now, so that a read of one waits for it instead of asking again. */
  private readonly inflight = new Map<string, Promise<Buffer>>();
  private readonly lineSlots: number;
  private readonly streams = new StreamTable(STREAM_SLOTS, STREAM_CONFIRM);

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
    if (blocks.length) {
      // Noted as the read arrives, not when it is answered: answers come back in any order.
      const first = blocks[0];
      const end = blocks[blocks.length - 1] + 1;
      const stream = this.streams.note(first, end);
      if (stream) this.readAhead(stream, first, end);
    }
    // The parent's part at once, so that it too sees its reads in the order they came.
    const parentPart = fromParent.length && this.parent ? this.parent.read(fromParent) : undefined;
    parentPart?.catch(() => undefined); // awaited below, unless our own part fails first
    const lines = await this.lines(wanted);
    const bs = this.state.blockSize;
    for (const w of wanted) {
      const line = lines.get(this.lineKey(w.seq, Math.floor(w.slot / this.lineSlots))) as Buffer;
      const at = (w.slot % this.lineSlots) * bs;
      if (line.length < at + bs) throw new BackendError(`volume ${this.state.volumeId}: record ${w.seq} is shorter than its header says`);
      out.set(w.block, this.verified(w.block, line.subarray(at, at + bs), logKey(this.state.volumeId, w.seq)));
    }
    if (parentPart) for (const [b, data] of await parentPart) out.set(b, data);
    return out;
  }

  /** The lines the blocks are in: cached, being fetched, or fetched now (neighbours in one GET). */
  private async lines(wanted: Array<{ seq: number; slot: number }>): Promise<Map<string, Buffer>> {
    const got = new Map<string, Buffer>();
    const seen = new Set<string>();
    const waits: Array<Promise<void>> = [];
    const missing: LineRun[] = [];
    const maxLines = Math.max(1, Math.floor(MAX_GET_BYTES / (this.lineSlots * this.state.blockSize)));
    for (const w of wanted) {
      const line = Math.floor(w.slot / this.lineSlots);
      const key = this.lineKey(w.seq, line);
      if (seen.has(key)) continue;
      seen.add(key);
      const cached = this.cache.get(key);
      if (cached) {
        got.set(key, cached);
        continue;
      }
      const pending = this.inflight.get(key);
      if (pending) {
        waits.push(pending.then((b) => void got.set(key, b)));
        continue;
      }
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
    await Promise.all([...waits, ...Array.from({ length: Math.min(PARALLEL_GETS, missing.length) }, worker)]);
    return got;
  }

  /**
   * One ranged GET for `count` lines of a record. Each line is handed on (to the cache, to the
   * reads waiting for it) as soon as its bytes are in, not when the whole answer is.
   */
  private fetchLines(seq: number, first: number, count: number): Promise<Buffer[]> {
    const info = this.state.records.get(seq);
    if (!info) return Promise.reject(new BackendError(`volume ${this.state.volumeId}: the map points into record ${seq}, which it does not know`));
    const bs = this.state.blockSize;
    const lineBytes = this.lineSlots * bs;
    const bytes = Math.min(count * this.lineSlots, info.blocks - first * this.lineSlots) * bs;
    const key = logKey(this.state.volumeId, seq);
    const lines: Buffer[] = new Array<Buffer>(count);
    const waiters: Array<{ key: string; resolve: (b: Buffer) => void; reject: (err: unknown) => void; promise: Promise<Buffer> }> = [];
    for (let i = 0; i < count; i++) {
      const k = this.lineKey(seq, first + i);
      let resolve!: (b: Buffer) => void;
      let reject!: (err: unknown) => void;
      const promise = new Promise<Buffer>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      promise.catch(() => undefined); // a line nobody waits for may fail unseen: its GET's caller hears of it
      waiters.push({ key: k, resolve, reject, promise });
      this.inflight.set(k, promise);
    }
    let handed = 0;
    const settle = (i: number, err: unknown, line?: Buffer) => {
      const w = waiters[i];
      if (this.inflight.get(w.key) === w.promise) this.inflight.delete(w.key);
      if (line) {
        lines[i] = line;
        w.resolve(line);
      } else w.reject(err);
    };
    // Full lines only: a line cut short by a short answer is handed on at the end, and never cached.
    const handOn = (body: Buffer, filled: number) => {
      for (; handed < count; handed++) {
        const to = Math.min(bytes, (handed + 1) * lineBytes);
        if (filled < to || body.length < to) return;
        const line = body.subarray(handed * lineBytes, to);
        this.cache.set(waiters[handed].key, line);
        settle(handed, undefined, line);
      }
    };
    return (async () => {
      try {
        const body = await this.store.get(key, { offset: info.dataStart + first * lineBytes, length: bytes }, { immutable: true, onData: handOn });
        if (!body) {
          throw new BackendError(`volume ${this.state.volumeId}: ${key} is missing from ${this.store.where}`, {
            hint: "the volume's objects were removed behind kindling's back; its data is lost",
          });
        }
        handOn(body, body.length);
        for (; handed < count; handed++) settle(handed, undefined, body.subarray(Math.min(body.length, handed * lineBytes), Math.min(body.length, (handed + 1) * lineBytes)));
        return lines;
      } catch (err) {
        for (; handed < count; handed++) settle(handed, err);
        throw err;
      }
    })();
  }

  /**
   * Keeps a stream's next `window` bytes fetched or on their way, in GETs of AHEAD_GET_BYTES
   * along the volume's blocks from where the stream's read-ahead got to: the read's own blocks
   * first (in the same GET as what follows them), then what follows, while the cache's
   * read-ahead limit leaves room. Only lines neither cached nor being fetched are asked for.
   */
  private readAhead(s: Stream, first: number, end: number): void {
    const bs = this.state.blockSize;
    const lineBytes = this.lineSlots * bs;
    const cap = Math.min(MAX_WINDOW_BYTES, Math.floor(this.cache.maxBytes / (2 * STREAM_SLOTS)));
    if (cap < lineBytes) return; // a cache this small would drop what is read ahead before it is read
    s.window = Math.min(cap, s.window ? s.window * 2 : FIRST_WINDOW_BYTES);
    const chunk = Math.max(1, Math.floor(Math.min(AHEAD_GET_BYTES, s.window) / bs));
    const limit = this.state.blocks;
    const until = Math.min(limit, first + Math.ceil(s.window / bs));
    let at = Math.max(s.aheadEnd, first);
    while (at < limit && (at < end || at < until)) {
      const stop = Math.min(limit, at + chunk);
      if (!this.fetchAhead(at, stop, at < end)) break;
      at = stop;
    }
    s.aheadEnd = Math.max(s.aheadEnd, at);
  }

  /** Fetches the lines of blocks [from, to) not yet cached or on their way; false when the read-ahead limit has no room for them. */
  private fetchAhead(from: number, to: number, needed: boolean): boolean {
    const runs: LineRun[] = [];
    const maxLines = Math.max(1, Math.floor(MAX_GET_BYTES / (this.lineSlots * this.state.blockSize)));
    let lastSeq = -1;
    let lastLine = -1;
    for (let b = from; b < to; b++) {
      const loc = this.state.map.get(b);
      if (loc === undefined || loc < 0) continue; // zeroes, or a clone's parent's (its own reader reads ahead)
      const seq = locSeq(loc);
      const line = Math.floor(locSlot(loc) / this.lineSlots);
      if (seq === lastSeq && line === lastLine) continue;
      lastSeq = seq;
      lastLine = line;
      const key = this.lineKey(seq, line);
      if (this.cache.has(key) || this.inflight.has(key) || !this.state.records.has(seq)) continue;
      const run = runs[runs.length - 1];
      if (run && run.seq === seq && run.first + run.count === line && run.count < maxLines) run.count++;
      else runs.push({ seq, first: line, count: 1 });
    }
    const bytes = runs.reduce((n, r) => n + r.count, 0) * this.lineSlots * this.state.blockSize;
    if (!this.cache.reserveReadAhead(bytes, needed)) return false;
    for (const r of runs) {
      const reserved = r.count * this.lineSlots * this.state.blockSize;
      void this.fetchLines(r.seq, r.first, r.count)
        .catch(() => undefined) // a read waiting for one of its lines hears of it; read-ahead nobody waits for may fail unheard
        .finally(() => this.cache.releaseReadAhead(reserved));
    }
    return true;
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
