import { BackendError } from "../../util/errors";
import { BlockMap } from "./blockmap";
import { Intervals } from "./intervals";
import { runsToBlocks, type ParentRef, type RecordHeader } from "./record";

// A volume as its log says it is at one sequence number: size, the map from block to where its
// bytes are, what pins old states (snapshots, clones), and which records still hold live data
// (for garbage collection). Built by applying records in order; saved whole as checkpoints.

/** Map values: a block's bytes in record `seq` at `slot`, or one of these. */
export const ZERO_HOLE = -1; // reads as zeroes, holds nothing, hides a clone's parent
export const ZERO_ALLOC = -2; // reads as zeroes, reported allocated (WRITE_ZEROES without trim)
const SLOTS = 8192;

export const packLoc = (seq: number, slot: number) => seq * SLOTS + slot;
export const locSeq = (loc: number) => Math.floor(loc / SLOTS);
export const locSlot = (loc: number) => loc % SLOTS;
/** The most blocks one record may carry. */
export const MAX_RECORD_BLOCKS = SLOTS;

export interface RecordInfo {
  /** Where the record's data starts in its object. */
  dataStart: number;
  /** How many blocks of data it holds. */
  blocks: number;
  /** Blocks of the head map still pointing into it. */
  live: number;
  /** The sequence number at which its last live block was overwritten. */
  deadAt?: number;
}

export interface Pins {
  snapshots: Map<string, number>;
  clones: Map<string, number>;
  /** Pinned sequence number -> a checkpoint at or before it (pins appended without one of their own). */
  bases: Map<number, number>;
}

/** A checkpoint's header: everything but the map. */
interface CheckpointHeader {
  volume: string; seq: number; sizeBytes: number; blockSize: number; parent?: ParentRef; epoch: number; jseq?: number; holder?: string;
  snapshots: Record<string, number>; clones: Record<string, number>; bases?: Array<[number, number]>; hidden?: ReadonlyArray<readonly [number, number]>;
  records: Array<[number, number, number, number, number]>; entries: number;
}

export const CHECKPOINT_PREFIX_BYTES = 12;
const CHECKPOINT_MAGIC = "KNDLCKP1";

/** The length of a checkpoint's JSON header, from its first 12 bytes. */
export function checkpointHeaderLength(bytes: Buffer, key: string): number {
  if (bytes.length < CHECKPOINT_PREFIX_BYTES || bytes.toString("latin1", 0, 8) !== CHECKPOINT_MAGIC) throw new BackendError(`${key} is not a kindling checkpoint`);
  return bytes.readUInt32BE(8);
}

export class VolumeState {
  seq = -1;
  sizeBytes = 0;
  blockSize = 0;
  parent?: ParentRef;
  /** The newest writer's epoch (its `open` record's sequence number). */
  epoch = 0;
  /** The newest local journal entry committed (durability local). */
  jseq = 0;
  holder?: string;
  readonly map = new BlockMap();
  /** CRC-32 of each mapped data block, checked on reads. */
  readonly crcs = new BlockMap();
  readonly records = new Map<number, RecordInfo>();
  /** A clone's trimmed ranges: unmapped there, yet they must not show the parent's data. */
  hidden = new Intervals();
  readonly pins: Pins = { snapshots: new Map(), clones: new Map(), bases: new Map() };
  /** The sequence number of the newest checkpoint this state came from or was saved as. */
  checkpointSeq = -1;

  /**
   * `metaOnly`: everything but the map (size, pins, parent, writer), built from a checkpoint's
   * header and the records' headers without their block lists: what snapshot, clone and extend
   * need, in time that does not grow with the volume. Never saved as a checkpoint.
   */
  constructor(
    readonly volumeId: string,
    readonly metaOnly = false,
  ) {}

  get blocks(): number {
    return Math.ceil(this.sizeBytes / this.blockSize);
  }

  /** Applies the next record; records must come in order, each exactly once. */
  apply(header: RecordHeader, dataStart: number): void {
    if (header.seq !== this.seq + 1) throw new BackendError(`volume ${this.volumeId}: log record ${header.seq} applied after ${this.seq}`);
    if (header.volume !== this.volumeId) throw new BackendError(`log record ${header.seq} of volume ${this.volumeId} says it belongs to ${header.volume}`);
    this.seq = header.seq;
    switch (header.kind) {
      case "genesis":
        this.sizeBytes = header.sizeBytes ?? 0;
        this.blockSize = header.blockSize ?? 0;
        this.parent = header.parent;
        break;
      case "open":
        this.epoch = header.seq;
        this.holder = header.holder;
        break;
      case "data":
        // A record from a writer that has since been fenced cannot land after the fence (every
        // commit is a create at the next sequence number), but an old record is never applied.
        if (header.epoch !== this.epoch || this.metaOnly) break;
        this.applyData(header, dataStart);
        break;
      case "resize":
        // Volumes only grow: an extend asked for against an older size never shrinks a newer one.
        this.sizeBytes = Math.max(this.sizeBytes, header.sizeBytes ?? 0);
        break;
      case "snapshot":
        if (header.snapshot) this.pins.snapshots.set(header.snapshot, header.seq);
        if (header.base !== undefined) this.pins.bases.set(header.seq, header.base);
        break;
      case "snapdel":
        if (header.snapshot) this.pins.snapshots.delete(header.snapshot);
        break;
      case "clone":
        if (header.child) this.pins.clones.set(header.child, header.at ?? header.seq);
        if (header.base !== undefined) this.pins.bases.set(header.at ?? header.seq, header.base);
        break;
      case "unclone":
        if (header.child) this.pins.clones.delete(header.child);
        break;
      case "flattened":
        this.parent = undefined;
        if (this.metaOnly) break;
        for (const [block, loc] of this.map) if (loc === ZERO_HOLE) this.map.delete(block);
        this.hidden = new Intervals();
        break;
      case "close":
        this.holder = undefined;
        break;
    }
  }

  private applyData(header: RecordHeader, dataStart: number): void {
    const seq = header.seq;
    if (header.jseq !== undefined) this.jseq = header.jseq;
    // Trimmed ranges first, then the blocks the record carries one by one (newer than any range).
    for (const [start, count] of header.unmap ?? []) {
      this.clearRange(start, start + count, seq);
      if (this.parent) this.hidden.add(start, start + count);
    }
    for (const block of runsToBlocks(header.zero)) this.setBlock(block, ZERO_ALLOC, seq);
    const data = runsToBlocks(header.data);
    if (data.length) this.records.set(seq, { dataStart, blocks: data.length, live: 0 });
    data.forEach((block, slot) => {
      this.setBlock(block, packLoc(seq, slot), seq);
      const crc = header.crc?.[slot];
      if (crc !== undefined) this.crcs.set(block, crc);
    });
  }

  /** Unmaps every mapped block in [start, end), skipping unmapped stretches a page at a time. */
  private clearRange(start: number, end: number, seq: number): void {
    for (let b = this.map.nextSet(start, end); b < end; b = this.map.nextSet(b + 1, end)) this.clearBlock(b, seq);
  }

  private release(old: number | undefined, seq: number): void {
    if (old === undefined || old < 0) return;
    const info = this.records.get(locSeq(old));
    if (info && --info.live === 0) info.deadAt = seq;
  }

  private setBlock(block: number, loc: number, seq: number): void {
    this.release(this.map.get(block), seq);
    this.map.set(block, loc);
    if (loc >= 0) {
      const info = this.records.get(locSeq(loc));
      if (info) {
        info.live++;
        info.deadAt = undefined;
      }
    } else this.crcs.delete(block);
  }

  private clearBlock(block: number, seq: number): void {
    this.release(this.map.get(block), seq);
    this.map.delete(block);
    this.crcs.delete(block);
  }

  /** Bytes the map points at (what the volume really stores). */
  get allocatedBytes(): number {
    let n = 0;
    for (const loc of this.map.values()) if (loc >= 0) n++;
    return n * this.blockSize;
  }

  /** Every state some snapshot or clone still reads. */
  pinnedSeqs(): number[] {
    return [...this.pins.snapshots.values(), ...this.pins.clones.values()];
  }

  /**
   * Records nothing reads any more: no block of the head points into them, and no pinned older
   * state did (a pin at S needs a record written at or before S that died after S).
   */
  deadRecords(upTo: number): number[] {
    const pins = this.pinnedSeqs();
    const out: number[] = [];
    for (const [seq, info] of this.records) {
      if (info.live > 0 || info.deadAt === undefined || info.deadAt > upTo) continue;
      if (pins.some((p) => p >= seq && p < (info.deadAt as number))) continue;
      out.push(seq);
    }
    return out.sort((a, b) => a - b);
  }

  forgetRecord(seq: number): void {
    this.records.delete(seq);
  }

  // ---- checkpoints

  /** Where the state at a pinned sequence number can be rebuilt from while it has no checkpoint of its own. */
  baseOf(pinned: number): number | undefined {
    return this.pins.bases.get(pinned);
  }

  encode(): Buffer {
    if (this.metaOnly) throw new BackendError(`volume ${this.volumeId}: a state without its map cannot be saved as a checkpoint`);
    const pinned = new Set(this.pinnedSeqs());
    const header: CheckpointHeader & { v: 1 } = {
      v: 1,
      volume: this.volumeId,
      seq: this.seq,
      sizeBytes: this.sizeBytes,
      blockSize: this.blockSize,
      parent: this.parent,
      epoch: this.epoch,
      jseq: this.jseq,
      holder: this.holder,
      snapshots: Object.fromEntries(this.pins.snapshots),
      clones: Object.fromEntries(this.pins.clones),
      bases: [...this.pins.bases].filter(([seq]) => pinned.has(seq)),
      hidden: this.hidden.list,
      records: [...this.records].map(([seq, r]) => [seq, r.dataStart, r.live, r.deadAt ?? -1, r.blocks]),
      entries: this.map.size,
    };
    const json = Buffer.from(JSON.stringify(header), "utf8");
    const table = new Float64Array(this.map.size * 3);
    let i = 0;
    for (const [block, loc] of this.map) {
      table[i++] = block;
      table[i++] = loc;
      table[i++] = this.crcs.get(block) ?? -1;
    }
    const prefix = Buffer.alloc(CHECKPOINT_PREFIX_BYTES);
    prefix.write(CHECKPOINT_MAGIC, 0, "latin1");
    prefix.writeUInt32BE(json.length, 8);
    return Buffer.concat([prefix, json, Buffer.from(table.buffer, table.byteOffset, table.byteLength)]);
  }

  /** The state a checkpoint's header describes, without its map (`bytes` holds at least the header). */
  static decodeMeta(bytes: Buffer, key: string): VolumeState {
    return VolumeState.fromHeader(VolumeState.parseHeader(bytes, key), true);
  }

  private static parseHeader(bytes: Buffer, key: string): CheckpointHeader {
    const len = checkpointHeaderLength(bytes, key);
    if (bytes.length < CHECKPOINT_PREFIX_BYTES + len) throw new BackendError(`${key}: checkpoint header cut short`);
    try {
      return JSON.parse(bytes.toString("utf8", CHECKPOINT_PREFIX_BYTES, CHECKPOINT_PREFIX_BYTES + len)) as CheckpointHeader;
    } catch {
      throw new BackendError(`${key}: checkpoint header is not JSON`);
    }
  }

  private static fromHeader(h: CheckpointHeader, metaOnly: boolean): VolumeState {
    const s = new VolumeState(h.volume, metaOnly);
    Object.assign(s, { seq: h.seq, sizeBytes: h.sizeBytes, blockSize: h.blockSize, parent: h.parent, epoch: h.epoch, jseq: h.jseq ?? 0, holder: h.holder, checkpointSeq: h.seq });
    for (const [id, seq] of Object.entries(h.snapshots)) s.pins.snapshots.set(id, seq);
    for (const [id, seq] of Object.entries(h.clones)) s.pins.clones.set(id, seq);
    for (const [seq, base] of h.bases ?? []) s.pins.bases.set(seq, base);
    s.hidden = Intervals.from(h.hidden);
    if (!metaOnly) for (const [seq, dataStart, live, deadAt, blocks] of h.records) s.records.set(seq, { dataStart, blocks, live, deadAt: deadAt < 0 ? undefined : deadAt });
    return s;
  }

  static decode(bytes: Buffer, key: string): VolumeState {
    const h = VolumeState.parseHeader(bytes, key);
    const s = VolumeState.fromHeader(h, false);
    const start = CHECKPOINT_PREFIX_BYTES + checkpointHeaderLength(bytes, key);
    const raw = bytes.subarray(start, start + h.entries * 24);
    if (raw.length !== h.entries * 24) throw new BackendError(`${key}: checkpoint cut short`);
    const table = new Float64Array(new Uint8Array(raw).buffer);
    for (let i = 0; i < table.length; i += 3) {
      s.map.set(table[i], table[i + 1]);
      if (table[i + 2] >= 0) s.crcs.set(table[i], table[i + 2]);
    }
    return s;
  }

  clone(): VolumeState {
    return VolumeState.decode(this.encode(), "copy");
  }
}
