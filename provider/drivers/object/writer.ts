import { randomBytes } from "node:crypto";
import { crc32 } from "node:zlib";
import { BackendError } from "../../util/errors";
import { logger } from "../../util/log";
import type { BlockCache } from "./cache";
import { DirtySet, fill, overlay, SECTOR, type Dirty } from "./dirty";
import { checkpointKey, logKey } from "./layout";
import { StoreLease, type HeldLease } from "./lease";
import { answerAsk, ASK_POLL_MS, readAsk } from "./handoff";
import { appendRecord, dropVanishedClones, loadState, lostCreate, readHeader, saveCheckpoint, scanTail } from "./log";
import { BlockReader, pushRun, type BlockStatus, type StatusRun } from "./reader";
import { blocksToRuns, encodeRecordHead, newHeader, type DecodedHeader, type RecordHeader } from "./record";
import { failpoint } from "./failpoints";
import { Intervals } from "./intervals";
import { Journal, leftJournals, readJournals, removeJournals, type JournalEntry } from "./journal";
import { MAX_RECORD_BLOCKS, type VolumeState } from "./state";
import { PreconditionFailed, type ObjectStore } from "./store";

// The one writer of a volume in this process: every writable open of the volume here shares it,
// so a FLUSH covers what every connection wrote (NBD MULTI_CONN is honest). Writes collect in
// RAM; a commit takes all of them at once as one record, one create-only PUT at the next
// sequence number, so what the store holds after any crash is the volume as it was at some
// commit: a prefix of the writes, never a torn mix. Commits go one at a time (the next one
// collects while the last uploads), which is also what lets other processes append their small
// records (snapshot, extend) between two commits without a lock: a commit that meets one moves
// to the next number. (On Swift, whose creates are not exclusive, they hand those records to
// the writer instead: handoff.ts.)

export type Durability = "remote" | "local" | "unsafe";

/** Records only a volume's writer appends: one of another's where ours was to go fences us. */
const WRITER_KINDS = new Set<string>(["open", "data", "close", "genesis"]);

/**
 * Swift: how long a new writer waits after taking the lease before it reads the log. A process
 * that found the volume free just before appended its record directly (handoff.ts); by now that
 * create has landed, and the writer's `open` goes after it instead of at the same number.
 */
const SWIFT_OPEN_SETTLE_MS = 200;
/** Asks answered, remembered so that one rung again is not appended twice. */
const ANSWERS_KEPT = 64;

/** A run of whole blocks is copied in pieces of this size, each after waiting for room. */
const WRITE_CHUNK_BYTES = 1024 * 1024;

export interface WriterSettings {
  durability: Durability;
  /** A commit starts when this much is waiting. */
  segmentBytes: number;
  /** Writes wait while this much is waiting and a commit is under way (one record's worth at most). */
  dirtyLimitBytes: number;
  /** Nothing waits longer than this before a commit starts. */
  dirtyAgeMs: number;
  leaseMs: number;
  /** A checkpoint after this many records, so opening never replays more. */
  checkpointEvery: number;
  /** Dead records go only once a checkpoint past them is this old (readers mid-replay finish first). */
  gcHorizonMs: number;
  /** Where the local journal lives (durability local) and where a dead writer's journal is looked for. */
  cacheDir: string;
}

/** The writer lost the volume (another took it over, or its lease could not be renewed): EIO from now on. */
export class FencedError extends BackendError {}

export class VolumeWriter {
  private active: DirtySet;
  private committing?: DirtySet;
  private chain: Promise<void> = Promise.resolve();
  private fenced?: FencedError;
  private held?: HeldLease;
  private timers: NodeJS.Timeout[] = [];
  private waiters: Array<() => void> = [];
  /** Checkpoints this writer made or opened from, oldest first: what the sweep may judge by, and delete once superseded. */
  private checkpoints: Array<{ seq: number; at: number }> = [];
  /** Pinned states known to have a checkpoint of their own. */
  private readonly pinCheckpoints = new Set<number>();
  private lastError?: Error;
  private autoQueued = false;
  /** Swift: a look at the doorbell is queued. */
  private askQueued = false;
  /** Asks this writer answered: id to sequence number. */
  private readonly answered = new Map<string, number>();
  /** A commit's PUT is under way. */
  private uploading = false;
  private opens = 1;
  private closing?: Promise<void>;
  readonly reader: BlockReader;
  private journal?: Journal;

  private constructor(
    private readonly store: ObjectStore,
    readonly state: VolumeState,
    parent: BlockReader | undefined,
    cache: BlockCache,
    private readonly lease: StoreLease,
    private readonly settings: WriterSettings,
    private readonly onClosed: () => void,
  ) {
    this.reader = new BlockReader(store, state, cache, parent);
    this.active = new DirtySet(state.blockSize);
    // Readers may be loading it now: it counts as made now.
    if (state.checkpointSeq >= 0) this.checkpoints.push({ seq: state.checkpointSeq, at: performance.now() });
  }

  /** Takes the volume's lease, brings its state up to date and writes the `open` record. */
  static async open(
    store: ObjectStore,
    state: () => Promise<VolumeState>,
    parent: (s: VolumeState) => Promise<BlockReader | undefined>,
    cache: BlockCache,
    settings: WriterSettings,
    volumeId: string,
    onClosed: () => void,
  ): Promise<VolumeWriter> {
    const lease = new StoreLease(store, volumeId, settings.leaseMs);
    const held = await lease.acquire();
    try {
      if (store.api === "swift") await new Promise((r) => setTimeout(r, SWIFT_OPEN_SETTLE_MS));
      const s = await state();
      // A writer that died here under `durability: local` left acknowledged writes in its journal.
      const left = leftJournals(settings.cacheDir, volumeId);
      const entries = readJournals(left).filter((e) => e.jseq > s.jseq);
      if (entries.length && entries[0].epoch !== s.epoch) {
        throw new BackendError(`volume ${volumeId}: the local journal ${left[0]} holds writes the store never got, and another writer has opened the volume since`, {
          hint: "those writes cannot be put back over the other writer's; remove the journal files to open the volume without them",
        });
      }
      const w = new VolumeWriter(store, s, await parent(s), cache, lease, settings, onClosed);
      w.held = held;
      await appendRecord(store, s, "open", { holder: `pid ${process.pid}` });
      if (entries.length) await w.replay(entries);
      removeJournals(left);
      if (settings.durability === "local") w.journal = await Journal.create(settings.cacheDir, volumeId, s.epoch, s.jseq);
      w.start();
      return w;
    } catch (err) {
      await lease.release(held).catch(() => undefined);
      throw err;
    }
  }

  /** The writes of a dead writer's journal, committed before anything else. */
  private async replay(entries: JournalEntry[]): Promise<void> {
    const bs = this.state.blockSize;
    for (const e of entries) {
      if (e.kind === "unmap") await this.unmapRange(e.offset / bs, (e.offset + e.length) / bs);
      else if (e.kind === "zero") await this.zeroBlock(e.offset / bs);
      else {
        const b = Math.floor(e.offset / bs);
        const data = e.data as Buffer;
        // Whole blocks were journalled a run at a time, partial ones one block at a time.
        if (e.offset % bs === 0 && data.length % bs === 0) await this.writeBlocks(b, data);
        else await this.writePart(b, e.offset - b * bs, data);
      }
      this.active.maxJseq = e.jseq;
    }
    await this.commit();
  }

  /** Another open of the same volume in this process; false while it is closing (wait for `closed()`, then open anew). */
  share(): boolean {
    if (this.closing) return false;
    this.opens++;
    return true;
  }

  /** Resolves once a closing writer is done (its lease given back). */
  async closed(): Promise<void> {
    await this.closing?.catch(() => undefined);
  }

  private start(): void {
    const renew = setInterval(() => void this.renew(), Math.max(1000, this.settings.leaseMs / 3));
    const age = setInterval(() => {
      if (!this.active.isEmpty && performance.now() - this.active.since >= this.settings.dirtyAgeMs && !this.uploading && !this.autoQueued) void this.commit().catch(() => undefined);
    }, Math.max(50, Math.min(1000, this.settings.dirtyAgeMs / 2)));
    // Records others append (a snapshot, an extend) are seen at the next commit; an idle writer
    // looks for them now and then, so a grown volume shows its new size.
    const poll = setInterval(() => {
      if (!this.uploading && !this.committing && this.active.isEmpty) this.chain = this.chain.then(() => this.catchUp()).catch(() => undefined);
    }, 2000);
    for (const t of [renew, age, poll]) t.unref();
    this.timers.push(renew, age, poll);
    if (this.store.api === "swift") {
      // Other processes hand their records to the writer there (handoff.ts); between commits it
      // looks whether one waits.
      const asks = setInterval(() => {
        if (this.askQueued || this.fenced || this.closing) return;
        this.askQueued = true;
        this.chain = this.chain.then(() => this.answerAsks()).catch((err) => logger().warn({ volume: this.state.volumeId, err: (err as Error).message }, "object volume writer could not answer an ask")).finally(() => (this.askQueued = false));
      }, ASK_POLL_MS);
      asks.unref();
      this.timers.push(asks);
    }
  }

  get sizeBytes(): number {
    return this.state.sizeBytes;
  }

  private async renew(): Promise<void> {
    if (!this.held || this.fenced) return;
    try {
      if (!(await this.lease.renew(this.held))) this.fence("another writer took over its lease");
    } catch (err) {
      logger().warn({ volume: this.state.volumeId, err: (err as Error).message }, "object volume lease renewal failed; retrying");
    }
  }

  private fence(why: string): void {
    if (this.fenced) return;
    this.fenced = new FencedError(`volume ${this.state.volumeId}: this writer stopped (${why}); nothing more is written`, {
      hint: "reconnect: the volume is in another writer's hands now",
    });
    logger().warn({ volume: this.state.volumeId, why }, "object volume writer fenced");
    for (const w of this.waiters.splice(0)) w();
  }

  private check(): void {
    if (this.fenced) throw this.fenced;
  }

  /** The lease must be known good now: a writer paused past its lease may not answer FLUSH. */
  private checkLease(): void {
    this.check();
    if (this.held && performance.now() - this.held.confirmedAt > this.settings.leaseMs) {
      this.fence(`its lease was last confirmed ${Math.round((performance.now() - this.held.confirmedAt) / 1000)} s ago, past its ${this.settings.leaseMs / 1000} s`);
      this.check();
    }
  }

  // ---- reads, over what is not committed yet

  private pending(block: number): Dirty | undefined {
    const a = this.active.lookup(block);
    const c = this.committing?.lookup(block);
    if (a && c) return overlay(c, a, this.state.blockSize);
    return a ?? c;
  }

  async readBlocks(blocks: number[]): Promise<Map<number, Buffer | null>> {
    const out = new Map<number, Buffer | null>();
    const below: number[] = [];
    const partial: Array<[number, Dirty & { kind: "data" }]> = [];
    for (const b of blocks) {
      const d = this.pending(b);
      if (!d) below.push(b);
      else if (d.kind !== "data") out.set(b, null);
      else if (!d.mask) out.set(b, d.buf);
      else {
        partial.push([b, d]);
        below.push(b);
      }
    }
    if (below.length) for (const [b, data] of await this.reader.read(below)) out.set(b, data);
    for (const [b, d] of partial) out.set(b, fill(d, out.get(b) ?? null, this.state.blockSize));
    return out;
  }

  status(block: number): BlockStatus {
    const d = this.pending(block);
    if (!d) return this.reader.status(block);
    return d.kind === "data" ? "data" : d.kind === "unmap" ? "hole" : "zero";
  }

  /** The committed runs with what is not committed yet laid over them: older sets first, each its ranges then its blocks. */
  statusRuns(first: number, end: number): StatusRun[] {
    let runs = this.reader.statusRuns(first, end);
    for (const set of [this.committing, this.active]) {
      if (!set) continue;
      for (const [s, e] of set.unmapped.list) if (e > first && s < end) runs = paint(runs, Math.max(s, first), Math.min(e, end), "hole");
      const blocks = [...set.blocks.keys()].filter((b) => b >= first && b < end).sort((a, b) => a - b);
      for (const b of blocks) {
        const d = set.blocks.get(b) as Dirty;
        runs = paint(runs, b, b + 1, d.kind === "data" ? "data" : d.kind === "unmap" ? "hole" : "zero");
      }
    }
    return runs;
  }

  // ---- writes

  /**
   * Waits until `blocks` more fit in the waiting set (a record holds at most MAX_RECORD_BLOCKS,
   * and at most dirtyLimitMiB wait), then runs `add` in the same step as the check: with an
   * await between the two, concurrent writes each saw room and together overfilled a record
   * (slots past its last alias the next record's, and reads then fail their CRC).
   */
  private async room(blocks: number, add: () => void): Promise<void> {
    for (;;) {
      this.check();
      const a = this.active;
      if (a.isEmpty || (a.bytes + blocks * this.state.blockSize <= this.settings.dirtyLimitBytes && a.size + blocks <= MAX_RECORD_BLOCKS)) {
        add();
        this.kick();
        return;
      }
      // Full (a write waits): commit now, even short of a segment (a dirty limit set close to
      // the segment size would otherwise leave the write waiting for the age timer).
      this.kick(true);
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  private journalled(kind: "write" | "unmap" | "zero", offset: number, length: number, data?: Buffer): void {
    if (this.journal) this.active.maxJseq = this.journal.append(kind, offset, length, data);
  }

  /**
   * Whole blocks from `first` on (`data` a multiple of the block size). Copied once per
   * megabyte, not once per block: the set keeps views into that copy, and a commit sends
   * adjacent views as one piece (fewer small buffers to allocate, collect and copy again).
   */
  async writeBlocks(first: number, data: Buffer): Promise<void> {
    const bs = this.state.blockSize;
    for (let at = 0; at < data.length; at += WRITE_CHUNK_BYTES) {
      const piece = data.subarray(at, Math.min(data.length, at + WRITE_CHUNK_BYTES));
      const own = Buffer.allocUnsafe(piece.length);
      piece.copy(own);
      await this.room(own.length / bs, () => {
        for (let i = 0; i < own.length; i += bs) this.active.setFull(first + (at + i) / bs, own.subarray(i, i + bs), true);
        this.journalled("write", first * bs + at, piece.length, piece);
      });
    }
  }

  async writeFull(block: number, data: Buffer): Promise<void> {
    await this.room(1, () => {
      this.active.setFull(block, data);
      this.journalled("write", block * this.state.blockSize, data.length, data);
    });
  }

  async writePart(block: number, at: number, data: Buffer): Promise<void> {
    // Not sector-aligned (rare: NBD clients write sectors): the block's current bytes are read
    // first, for when the waiting set has no whole copy of it.
    const bs = this.state.blockSize;
    const unaligned = at % SECTOR !== 0 || data.length % SECTOR !== 0;
    const cur = unaligned ? ((await this.readBlocks([block])).get(block) ?? Buffer.alloc(bs)) : undefined;
    await this.room(1, () => {
      if (!this.active.setPart(block, at, data)) {
        const whole = Buffer.from(cur as Buffer);
        data.copy(whole, at);
        this.active.setFull(block, whole);
      }
      this.journalled("write", block * bs + at, data.length, data);
    });
  }

  /** Zeroes the client wants kept allocated (WRITE_ZEROES without trim), one block. */
  async zeroBlock(block: number): Promise<void> {
    await this.room(1, () => {
      this.active.setEmpty(block, "zero");
      this.journalled("zero", block * this.state.blockSize, this.state.blockSize);
    });
  }

  /** Trims blocks [start, end): one range in the next record, however long. */
  async unmapRange(start: number, end: number): Promise<void> {
    await this.room(0, () => {
      this.active.unmapRange(start, end);
      this.journalled("unmap", start * this.state.blockSize, (end - start) * this.state.blockSize);
    });
  }

  /**
   * Starts a commit once a segment's worth waits (`full`: whatever waits, the set has no more
   * room), unless one is under way or queued: when that one ends, whatever came in meanwhile
   * goes in the next, so commits stay large.
   */
  private kick(full = false): void {
    if (this.autoQueued || this.uploading || (!full && this.active.bytes < this.settings.segmentBytes)) return;
    this.autoQueued = true;
    const run = this.chain.then(() => {
      this.autoQueued = false;
      return this.commitActive();
    });
    this.chain = run.catch(() => undefined);
  }

  // ---- commits

  /** Commits what is waiting now (after any commit under way). */
  commit(): Promise<void> {
    const run = this.chain.then(() => this.commitActive());
    this.chain = run.catch(() => undefined);
    return run;
  }

  /**
   * FLUSH: in `remote` mode, returns once everything written before it is committed; in
   * `local` mode once it is in the journal on this host's disk; in `unsafe` mode at once.
   */
  async flush(): Promise<void> {
    this.check();
    if (this.journal) await this.journal.sync();
    else if (this.settings.durability !== "unsafe") {
      await this.commit();
      // A commit that failed earlier left its blocks waiting; the one above retried them.
      if (this.committing && this.lastError) throw this.lastError;
    }
    this.checkLease();
  }

  /**
   * Commits the set that failed last time (it goes first, as it was, so the order of writes
   * holds), then everything waiting now.
   */
  private async commitActive(): Promise<void> {
    this.check();
    this.uploading = true;
    try {
      if (this.committing) {
        await this.commitSet(this.committing);
        this.committing = undefined;
      }
      if (!this.active.isEmpty) {
        this.committing = this.active;
        this.active = new DirtySet(this.state.blockSize);
        await this.commitSet(this.committing);
        this.committing = undefined;
      }
      this.lastError = undefined;
      await this.journal?.committed(this.state.jseq);
    } catch (err) {
      // Nothing of the set is lost: it stays, and is committed before anything newer.
      this.lastError = err as Error;
      throw err;
    } finally {
      this.uploading = false;
      for (const w of this.waiters.splice(0)) w();
      this.kick();
    }
    // A checkpoint or a sweep that fails costs only time on the next open; the commit stands.
    await this.afterCommit().catch((err) => logger().warn({ volume: this.state.volumeId, err: (err as Error).message }, "object volume checkpoint or sweep failed"));
  }

  private async commitSet(gen: DirtySet): Promise<void> {
    const bs = this.state.blockSize;
    const sorted = [...gen.blocks.keys()].sort((a, b) => a - b);
    const dataBlocks: number[] = [];
    const zero: number[] = [];
    const unmapped = new Intervals();
    for (const [s, e] of gen.unmapped.list) unmapped.add(s, e);
    for (const b of sorted) {
      const d = gen.blocks.get(b) as Dirty;
      if (d.kind === "data") dataBlocks.push(b);
      else if (d.kind === "zero") zero.push(b);
      else unmapped.add(b, b + 1);
    }
    // Partial blocks get their other sectors from the committed state, off the write's path.
    const partial = dataBlocks.filter((b) => (gen.blocks.get(b) as Dirty & { kind: "data" }).mask);
    const bases = partial.length ? await this.reader.read(partial) : new Map<number, Buffer | null>();
    const bufs = dataBlocks.map((b) => fill(gen.blocks.get(b) as Dirty & { kind: "data" }, bases.get(b) ?? null, bs));
    const pieces = adjacentJoined(bufs);
    if (bufs.length > MAX_RECORD_BLOCKS) throw new BackendError(`volume ${this.state.volumeId}: a commit of ${bufs.length} blocks, more than a record holds (${MAX_RECORD_BLOCKS})`);
    const fields: Partial<RecordHeader> = {
      epoch: this.state.epoch,
      data: blocksToRuns(dataBlocks),
      crc: dataBlocks.map((b, i) => (gen.blocks.get(b) as Dirty & { kind: "data" }).crc ?? crc32(bufs[i])),
      unmap: unmapped.empty ? undefined : unmapped.list.map(([s, e]) => [s, e - s] as [number, number]),
      jseq: gen.maxJseq,
      zero: zero.length ? blocksToRuns(zero) : undefined,
    };
    for (;;) {
      this.check();
      const seq = this.state.seq + 1;
      // The same commit id on every attempt of this set: an attempt whose answer was lost
      // (a timeout) but that landed is known as ours by the 412 of the next one.
      gen.commitId ??= randomBytes(8).toString("hex");
      const header = newHeader("data", this.state.volumeId, seq, { ...fields, commit: gen.commitId });
      // The header, then the blocks as they are: sent as a list, never joined into one buffer.
      const head = encodeRecordHead(header);
      const body = [head, ...pieces];
      const dataStart = head.length;
      try {
        failpoint("commit-before-put");
        await this.store.put(logKey(this.state.volumeId, seq), body, { ifNoneMatch: true });
        failpoint("commit-after-put");
        const other = await lostCreate(this.store, this.state.volumeId, seq, header.commit, { meta: false });
        if (other) {
          // Another's record replaced ours (Swift): as if the create had met it. Ours goes again.
          this.takeForeign(other);
          continue;
        }
      } catch (err) {
        if (!(err instanceof PreconditionFailed)) throw err;
        if (await this.resolveCollision(seq, header.commit)) {
          this.applyOwn(header, dataStart, pieces, bufs.length);
          return;
        }
        continue;
      }
      this.applyOwn(header, dataStart, pieces, bufs.length);
      return;
    }
  }

  private applyOwn(header: RecordHeader, dataStart: number, pieces: readonly Buffer[], blocks: number): void {
    this.state.apply(header, dataStart);
    // What was just written is what the next reads want: cache it by where it now is.
    this.reader.remember(header.seq, pieces, blocks);
  }

  /**
   * Someone's record is where our commit wanted to go. Our own earlier attempt: done (true).
   * A small record of another process (snapshot, extend): applied, and we go on at the next
   * number (false). Another writer's: we are fenced.
   */
  private async resolveCollision(seq: number, commit: string): Promise<boolean> {
    const there = await readHeader(this.store, this.state.volumeId, seq);
    if (!there) return false; // vanished: a store without atomic creates; try the number again
    if (there.header.commit === commit) return true;
    this.takeForeign(there);
    return false;
  }

  /** Another process's record where ours was to go: a small one is applied; another writer's fences us. */
  private takeForeign(there: DecodedHeader): void {
    this.refuseWriterRecord(there.header);
    this.state.apply(there.header, there.dataStart);
  }

  /** A record only a writer makes, where this writer did not: it is fenced (throws FencedError). */
  private refuseWriterRecord(h: RecordHeader): void {
    if (!WRITER_KINDS.has(h.kind)) return;
    this.fence(`another writer committed record ${h.seq} (${h.kind})`);
    this.check();
  }

  /** Applies records others appended since our last commit. */
  private async catchUp(): Promise<void> {
    if (this.fenced) return;
    await scanTail(this.store, this.state, { check: (h) => this.refuseWriterRecord(h) }).catch((err) => {
      if (!(err instanceof FencedError)) throw err;
    });
  }

  /** Appends the record another process asked for at the doorbell, and answers where it went. */
  private async answerAsks(): Promise<void> {
    if (this.fenced) return;
    const ask = await readAsk(this.store, this.state.volumeId);
    if (!ask) return;
    let seq = this.answered.get(ask.id);
    if (seq === undefined) {
      this.check();
      seq = await appendRecord(this.store, this.state, ask.kind, ask.fields);
      this.answered.set(ask.id, seq);
      if (this.answered.size > ANSWERS_KEPT) this.answered.delete(this.answered.keys().next().value as string);
    }
    await answerAsk(this.store, this.state.volumeId, ask.id, seq);
  }

  private async afterCommit(): Promise<void> {
    if (this.state.seq - Math.max(this.state.checkpointSeq, 0) < this.settings.checkpointEvery) return;
    await this.checkpoint();
    await this.collect();
  }

  private async checkpoint(): Promise<void> {
    await saveCheckpoint(this.store, this.state, { hint: true });
    this.checkpoints.push({ seq: this.state.seq, at: performance.now() });
  }

  /**
   * Deletes records nothing reads any more, behind a checkpoint old enough, and the checkpoints
   * older than that one. Every pinned state gets its checkpoint first: a pin is appended with
   * only a base checkpoint before it, and replaying from there needs records the sweep may take.
   */
  private async collect(): Promise<void> {
    const old = this.checkpoints.filter((c) => performance.now() - c.at >= this.settings.gcHorizonMs).pop();
    if (!old) return;
    // Records others appended (a new snapshot's pin) count before anything is judged dead.
    await this.catchUp();
    this.check();
    await dropVanishedClones(this.store, this.state);
    await this.checkpointPins();
    for (const seq of this.state.deadRecords(old.seq)) {
      await this.store.delete(logKey(this.state.volumeId, seq));
      failpoint("sweep-after-delete");
      this.state.forgetRecord(seq);
    }
    // The hint names a checkpoint at least as new as `old`; pinned states keep theirs.
    const pinned = new Set(this.state.pinnedSeqs());
    for (const c of this.checkpoints.filter((c) => c.seq < old.seq)) {
      if (!pinned.has(c.seq)) await this.store.delete(checkpointKey(this.state.volumeId, c.seq));
    }
    this.checkpoints = this.checkpoints.filter((c) => c.seq >= old.seq);
  }

  /** Makes the checkpoint of every pinned state that has none yet, from its base and the records after it. */
  private async checkpointPins(): Promise<void> {
    for (const seq of this.state.pinnedSeqs()) {
      if (this.pinCheckpoints.has(seq)) continue;
      if (!(await this.store.head(checkpointKey(this.state.volumeId, seq)))) {
        // This writer's own newest checkpoint before the pin is there for sure (it deletes its
        // old ones only after this); the base the pin names may have gone since it was read.
        const base = this.checkpoints.filter((c) => c.seq <= seq).pop()?.seq ?? this.state.baseOf(seq);
        const at = await loadState(this.store, this.state.volumeId, { upTo: seq, base });
        failpoint("pin-checkpoint-before-save");
        await saveCheckpoint(this.store, at, { hint: false });
      }
      this.pinCheckpoints.add(seq);
    }
  }

  /**
   * Copies every block the volume still reads from its parent into the volume itself, then
   * records that it no longer reads through: after this the parent may go.
   */
  async flatten(): Promise<void> {
    const parent = this.reader.parentReader;
    if (!parent) return;
    const limit = Math.min(this.state.blocks, parent.state.blocks);
    for (let first = 0; first < limit; first += 256) {
      const blocks: number[] = [];
      for (let b = first; b < Math.min(limit, first + 256); b++) {
        if (!this.state.map.has(b) && !this.state.hidden.has(b) && !this.active.lookup(b) && parent.status(b) !== "hole") blocks.push(b);
      }
      if (!blocks.length) continue;
      for (const [b, data] of await parent.read(blocks)) {
        if (this.active.lookup(b) || this.state.map.has(b)) continue;
        if (data) await this.writeFull(b, data);
        else await this.zeroBlock(b);
      }
    }
    await this.commit();
    await (this.chain = this.chain.then(async () => {
      this.check();
      await appendRecord(this.store, this.state, "flattened", {});
    }));
    this.reader.dropParent();
  }

  /** The last close drains everything, writes a checkpoint, and gives the lease back. */
  async close(): Promise<void> {
    if (--this.opens > 0) return;
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    try {
      if (!this.fenced && this.settings.durability !== "unsafe") await this.commit();
      else if (!this.fenced) await this.commit().catch((err) => logger().warn({ err: (err as Error).message }, "unsafe volume: data not committed at close"));
      if (!this.fenced) {
        await this.chain;
        // Everything is in the store: the journal has nothing the store lacks.
        if (this.active.isEmpty && !this.committing) await this.journal?.remove();
        await appendRecord(this.store, this.state, "close", {}).catch(() => undefined);
        if (this.state.seq > this.state.checkpointSeq) await this.checkpoint().catch(() => undefined);
      }
    } finally {
      if (this.held && !this.fenced) await this.lease.release(this.held).catch(() => undefined);
      this.onClosed();
    }
  }
}

/** Buffers that follow each other in one ArrayBuffer, as one view each: the record's pieces. */
function adjacentJoined(bufs: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  for (const b of bufs) {
    const last = out[out.length - 1];
    if (last && last.buffer === b.buffer && last.byteOffset + last.length === b.byteOffset) out[out.length - 1] = Buffer.from(last.buffer, last.byteOffset, last.length + b.length);
    else out.push(b);
  }
  return out;
}

/** `runs` with [start, end) set to `status`. */
function paint(runs: StatusRun[], start: number, end: number, status: BlockStatus): StatusRun[] {
  const out: StatusRun[] = [];
  for (const r of runs) {
    if (r.end <= start || r.start >= end) {
      pushRun(out, r.start, r.end, r.status);
      continue;
    }
    pushRun(out, r.start, Math.min(r.end, start), r.status);
    pushRun(out, Math.max(r.start, start), Math.min(r.end, end), status);
    pushRun(out, Math.max(end, r.start), r.end, r.status);
  }
  return out;
}
