import { randomBytes } from "node:crypto";
import { BackendError } from "../../util/errors";

// The log's records. A record is one object: an 8-byte magic, the header's length, the header
// (JSON: small, readable with `curl`, and versioned), then the data blocks the header lists, each
// exactly one map block. The header carries a CRC-32 per block, checked on every read, so a
// block that rots in the store or comes back short is an error, never wrong bytes.

const MAGIC = Buffer.from("KNDLREC1");
export const RECORD_PREFIX_BYTES = 12;

/** [first block, count]: runs keep sequential writes' headers small. */
export type Run = [number, number];

export type RecordKind =
  | "genesis" // the volume's birth: size, block size, the parent of a clone
  | "open" // a writer took the volume: its epoch is this record's sequence number
  | "data" // blocks written, zeroed or trimmed
  | "resize" // extend
  | "snapshot" // pins the state at this sequence number
  | "snapdel"
  | "clone" // a clone reads through to this volume's state at `at`
  | "unclone"
  | "flattened" // this clone no longer reads through to its parent
  | "close"; // a writer drained and let go

export interface ParentRef {
  volumeId: string;
  seq: number;
  /** A checkpoint at or before `seq` to replay from while the parent has none at `seq` yet. */
  base?: number;
}

export interface RecordHeader {
  v: 1;
  kind: RecordKind;
  volume: string;
  seq: number;
  /** Random per attempt: a retried PUT that meets 412 knows its own record by it. */
  commit: string;
  time: string;
  /** The writer's epoch (data records): the sequence number of its `open` record. */
  epoch?: number;
  holder?: string;
  sizeBytes?: number;
  blockSize?: number;
  parent?: ParentRef;
  /** Blocks whose data follows, in order. */
  data?: Run[];
  crc?: number[];
  /** Blocks that read as zeroes and hold no data: unmapped (a hole) ... */
  unmap?: Run[];
  /** ... or zeroes the client asked to keep allocated (WRITE_ZEROES without trim). */
  zero?: Run[];
  /** The newest journal entry (durability local) the record holds. */
  jseq?: number;
  snapshot?: string;
  child?: string;
  at?: number;
  /**
   * Pins (snapshot, clone): a checkpoint at or before the pinned state. A pin is appended
   * without writing a checkpoint of its own (that would cost time in proportion to the
   * volume), so until the volume's writer makes one at the pin, its state is this checkpoint
   * and the records after it.
   */
  base?: number;
}

export function newHeader(kind: RecordKind, volume: string, seq: number, fields: Partial<RecordHeader> = {}): RecordHeader {
  return { v: 1, kind, volume, seq, commit: randomBytes(8).toString("hex"), time: new Date().toISOString(), ...fields };
}

/** A record's magic, header length and header: what comes before its data. */
export function encodeRecordHead(header: RecordHeader): Buffer {
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const out = Buffer.allocUnsafe(RECORD_PREFIX_BYTES + json.length);
  MAGIC.copy(out, 0);
  out.writeUInt32BE(json.length, 8);
  json.copy(out, RECORD_PREFIX_BYTES);
  return out;
}

export function encodeRecord(header: RecordHeader, blocks: Buffer[] = []): Buffer {
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const prefix = Buffer.alloc(RECORD_PREFIX_BYTES);
  MAGIC.copy(prefix, 0);
  prefix.writeUInt32BE(json.length, 8);
  // One copy of each block into one buffer: Buffer.concat of thousands of small blocks costs
  // about six times as much (measured: 12 ms against 2 ms for 2,048 blocks of 4 KiB).
  let total = RECORD_PREFIX_BYTES + json.length;
  for (const b of blocks) total += b.length;
  const out = Buffer.allocUnsafe(total);
  prefix.copy(out, 0);
  json.copy(out, RECORD_PREFIX_BYTES);
  let at = RECORD_PREFIX_BYTES + json.length;
  for (const b of blocks) at += b.copy(out, at);
  return out;
}

/** The header's length, from a record's first 12 bytes. */
export function headerLength(prefix: Buffer, key: string): number {
  if (prefix.length < RECORD_PREFIX_BYTES || !prefix.subarray(0, 8).equals(MAGIC)) {
    throw new BackendError(`${key} is not a kindling record (bad magic): the store holds something kindling did not write there`);
  }
  return prefix.readUInt32BE(8);
}

/**
 * A record's kind and commit id from the start of its header (it always begins
 * `{"v":1,"kind":...,"volume":...,"seq":...,"commit":...`, as `newHeader` builds it), for readers
 * that skip data records and so need not fetch a long header whole.
 */
export function peekHeader(bytes: Buffer): { kind: string; commit: string } | undefined {
  const m = /^\{"v":1,"kind":"([a-z]+)","volume":"[0-9a-f-]+","seq":\d+,"commit":"([0-9a-f]+)"/.exec(bytes.toString("utf8", RECORD_PREFIX_BYTES, Math.min(bytes.length, RECORD_PREFIX_BYTES + 160)));
  return m ? { kind: m[1], commit: m[2] } : undefined;
}

export interface DecodedHeader {
  header: RecordHeader;
  /** Where the record's data starts. */
  dataStart: number;
}

export function decodeHeader(bytes: Buffer, key: string): DecodedHeader {
  const len = headerLength(bytes, key);
  if (bytes.length < RECORD_PREFIX_BYTES + len) throw new BackendError(`${key}: record header cut short`);
  let header: RecordHeader;
  try {
    header = JSON.parse(bytes.subarray(RECORD_PREFIX_BYTES, RECORD_PREFIX_BYTES + len).toString("utf8")) as RecordHeader;
  } catch {
    throw new BackendError(`${key}: record header is not JSON`);
  }
  if (header.v !== 1) throw new BackendError(`${key}: record format ${String(header.v)} is newer than this kindling reads`, { hint: "upgrade kindling" });
  return { header, dataStart: RECORD_PREFIX_BYTES + len };
}

export function runsToBlocks(runs: Run[] | undefined): number[] {
  const out: number[] = [];
  for (const [start, count] of runs ?? []) for (let i = 0; i < count; i++) out.push(start + i);
  return out;
}

/** Sorted block numbers as runs. */
export function blocksToRuns(blocks: number[]): Run[] {
  const runs: Run[] = [];
  for (const b of blocks) {
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === b) last[1]++;
    else runs.push([b, 1]);
  }
  return runs;
}
