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
/**
 * Reads that must continue a stream before it gets read-ahead: random reads hardly ever land
 * right after another one, and practically never twice in a row.
 */
const STREAM_CONFIRM = 2;
/** A stream's read-ahead starts at this far ahead of its read, and doubles with every read that continues it ... */
const FIRST_WINDOW_BYTES = 1024 * 1024;
/** ... up to this (a sixteenth of the cache when that is less: all the streams' windows fit in half of it). */
const MAX_WINDOW_BYTES = 16 * 1024 * 1024;
/**
 * What one read-ahead GET asks for at most: GETs of 8 MiB are what both stores serve fastest
 * here (175-290 MiB/s with 1-4 in flight, against 11-38 MiB/s in GETs of 64 KiB: bench/README.md,
 * "Object stores on this machine"); a full window keeps two of them in flight per stream.
 */
const AHEAD_GET_BYTES = MAX_GET_BYTES;
/** Lines fetched between two wanted ones of a record rather than a GET more for the second. */
const GAP_LINES = 2;

const EMPTY = Buffer.alloc(0);

interface LineRun {
  seq: number;
  first: number;
  count: number;
}

/**
 * Lines to fetch, gathered into runs of neighbours in one record (one GET each), in whatever
 * order they come: a volume written through several connections at once has its blocks in
 * records that alternate range by range, down to single blocks, so neighbours in a record are
 * not neighbours in the volume, and one line may hold blocks of places far apart. A gap of up
 * to GAP_LINES lines inside a run is fetched with it: another GET costs more than the bytes.
 */
class LineRuns {
  /** By record: each line wanted, with the order it came in. */
  private readonly bySeq = new Map<number, Map<number, number>>();
  private added = 0;

  constructor(private readonly maxLines: number) {}

  add(seq: number, line: number): void {
    let lines = this.bySeq.get(seq);
    if (!lines) this.bySeq.set(seq, (lines = new Map()));
    if (!lines.has(line)) lines.set(line, this.added++);
  }

  /** The runs, the one holding the line that came first first. */
  runs(): LineRun[] {
    const out: Array<LineRun & { order: number }> = [];
    for (const [seq, lines] of this.bySeq) {
      let run: (LineRun & { order: number }) | undefined;
      for (const line of [...lines.keys()].sort((a, b) => a - b)) {
        const order = lines.get(line) as number;
        if (run && line - (run.first + run.count) <= GAP_LINES && line - run.first < this.maxLines) {
          run.count = line - run.first + 1;
          run.order = Math.min(run.order, order);
        } else out.push((run = { seq, first: line, count: 1, order }));
      }
    }
    return out.sort((a, b) => a.order - b.order);
  }
}

export class BlockReader {
  /** Lines being fetched now, so that a read of one waits for it instead of asking again. */
  private readonly inflight = new Map<string, Promise<Buffer>>();
  private readonly lineSlots: number;
  private readonly maxGetLines: number;
  private readonly streams = new StreamTable(STREAM_SLOTS, STREAM_CONFIRM);

  constructor(
    private readonly store: ObjectStore,
    readonly state: VolumeState,
    private readonly cache: BlockCache,
    private parent?: BlockReader,
  ) {
    this.lineSlots = Math.max(1, Math.floor(LINE_BYTES / state.blockSize));
    this.maxGetLines = Math.max(1, Math.floor(MAX_GET_BYTES / (this.lineSlots * state.blockSize)));
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

  /** A record just committed: its lines are cached from the pieces of data that went up (in order), so reading back costs no GET. */
  remember(seq: number, pieces: readonly Buffer[], blocks: number): void {
    const lineBytes = this.lineSlots * this.state.blockSize;
    const total = blocks * this.state.blockSize;
    let p = 0;
    let pieceStart = 0;
    for (let i = 0, start = 0; start < total; i++, start += lineBytes) {
      const end = Math.min(total, start + lineBytes);
      while (pieceStart + pieces[p].length <= start) pieceStart += pieces[p++].length;
      // A line inside one piece is a view of it; one across pieces is copied (the pieces are
      // the writes' own buffers, a request or a megabyte each, so that is the odd line).
      if (end <= pieceStart + pieces[p].length) this.cache.set(this.lineKey(seq, i), pieces[p].subarray(start - pieceStart, end - pieceStart));
      else {
        const line = Buffer.allocUnsafe(end - start);
        for (let q = p, at = pieceStart; at < end; at += pieces[q++].length) {
          const from = Math.max(start, at);
          const to = Math.min(end, at + pieces[q].length);
          pieces[q].copy(line, from - start, from - at, to - at);
        }
        this.cache.set(this.lineKey(seq, i), line);
      }
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
    const { lines, lineOf } = await this.lines(wanted);
    const bs = this.state.blockSize;
    for (let i = 0; i < wanted.length; i++) {
      const w = wanted[i];
      const line = lines[lineOf[i]];
      const at = (w.slot % this.lineSlots) * bs;
      if (line.length < at + bs) throw new BackendError(`volume ${this.state.volumeId}: record ${w.seq} is shorter than its header says`);
      out.set(w.block, this.verified(w.block, line.subarray(at, at + bs), w.seq));
    }
    if (parentPart) for (const [b, data] of await parentPart) out.set(b, data);
    return out;
  }

  /**
   * The lines the blocks are in (`lines[lineOf[i]]` holds wanted[i]): cached, being fetched, or
   * fetched now (neighbours in one GET).
   */
  private async lines(wanted: Array<{ seq: number; slot: number }>): Promise<{ lines: Buffer[]; lineOf: number[] }> {
    const lines: Buffer[] = [];
    const lineOf: number[] = new Array<number>(wanted.length);
    const index = new Map<string, number>();
    const waits: Array<Promise<void>> = [];
    const gather = new LineRuns(this.maxGetLines);
    let lastSeq = -1;
    let lastLine = -1;
    for (let i = 0; i < wanted.length; i++) {
      const w = wanted[i];
      const line = Math.floor(w.slot / this.lineSlots);
      // Blocks of one line mostly come one after the other: no key to build for them.
      if (w.seq === lastSeq && line === lastLine) {
        lineOf[i] = lineOf[i - 1];
        continue;
      }
      lastSeq = w.seq;
      lastLine = line;
      const key = this.lineKey(w.seq, line);
      const known = index.get(key);
      if (known !== undefined) {
        lineOf[i] = known;
        continue;
      }
      const at = lines.length;
      index.set(key, at);
      lineOf[i] = at;
      const cached = this.cache.get(key);
      lines.push(cached ?? EMPTY);
      if (cached) continue;
      const pending = this.inflight.get(key);
      if (pending) waits.push(pending.then((b) => void (lines[at] = b)));
      else gather.add(w.seq, line);
    }
    const missing = gather.runs();
    let next = 0;
    const worker = async () => {
      while (next < missing.length) {
        const run = missing[next++];
        const fetched = await this.fetchLines(run.seq, run.first, run.count);
        fetched.forEach((line, i) => {
          const at = index.get(this.lineKey(run.seq, run.first + i));
          if (at !== undefined) lines[at] = line; // a gap line fetched with its neighbours is only cached
        });
      }
    };
    await Promise.all([...waits, ...Array.from({ length: Math.min(PARALLEL_GETS, missing.length) }, worker)]);
    return { lines, lineOf };
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

  /**
   * Fetches the lines of blocks [from, to) not yet cached or on their way; false when the
   * read-ahead limit has no room for them, unless a read waits for them (`needed`).
   */
  private fetchAhead(from: number, to: number, needed: boolean): boolean {
    // Asked before the blocks are looked at: while the limit is reached, every read of a stream asks.
    if (!needed && !this.cache.roomForReadAhead((to - from) * this.state.blockSize)) return false;
    const gather = new LineRuns(this.maxGetLines);
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
      gather.add(seq, line);
    }
    const runs = gather.runs();
    const bytes = runs.reduce((n, r) => n + r.count, 0) * this.lineSlots * this.state.blockSize;
    this.cache.reserveReadAhead(bytes);
    for (const r of runs) {
      const reserved = r.count * this.lineSlots * this.state.blockSize;
      void this.fetchLines(r.seq, r.first, r.count)
        .catch(() => undefined) // a read waiting for one of its lines hears of it; read-ahead nobody waits for may fail unheard
        .finally(() => this.cache.releaseReadAhead(reserved));
    }
    return true;
  }

  /** Every block is checked against the CRC its record gave, wherever it came from. */
  private verified(block: number, data: Buffer, seq: number): Buffer {
    const expected = this.state.crcs.get(block);
    if (expected !== undefined && crc32(data) !== expected) {
      throw new BackendError(`volume ${this.state.volumeId}: block ${block} from ${logKey(this.state.volumeId, seq)} fails its checksum`, { hint: "the stored object is damaged" });
    }
    return data;
  }
}
