import { BackendError, NotFoundError } from "../../util/errors";
import { checkpointKey, hintKey, logKey, seqOfKey } from "./layout";
import { decodeHeader, encodeRecord, headerLength, newHeader, peekHeader, RECORD_PREFIX_BYTES, type DecodedHeader, type RecordHeader, type RecordKind } from "./record";
import { failpoint } from "./failpoints";
import { PreconditionFailed, type ObjectStore } from "./store";
import { CHECKPOINT_PREFIX_BYTES, checkpointHeaderLength, VolumeState } from "./state";

// Reading and appending a volume's log. The log above the newest checkpoint has no gaps (a
// commit is always at the next sequence number, and only records behind an older checkpoint
// are ever deleted), so its end is where the first record is missing: found by reading the
// records' headers a batch at a time, never by LIST.

/** What a first ranged GET of a record or checkpoint reads: its header almost always fits. */
const HEADER_GUESS = 64 * 1024;
/** Headers read at once while looking for the log's end: a few first (there are seldom more), then more. */
const FIRST_BATCH = 4;
const BATCH = 16;
/** How often a load starts over when the log moved under it (a sweep, a new checkpoint). */
const LOAD_ATTEMPTS = 3;

/**
 * A record's header, or undefined when there is no record at `seq`. `meta`: a data record's
 * header is not fetched whole when it is long (its block lists are not wanted).
 */
export async function readHeader(store: ObjectStore, volumeId: string, seq: number, opts: { meta?: boolean } = {}): Promise<DecodedHeader | undefined> {
  const key = logKey(volumeId, seq);
  let bytes = await store.get(key, { offset: 0, length: HEADER_GUESS });
  if (!bytes) return undefined;
  const len = headerLength(bytes, key);
  if (bytes.length < RECORD_PREFIX_BYTES + len) {
    const peek = opts.meta ? peekHeader(bytes) : undefined;
    if (peek?.kind === "data") return { header: { v: 1, kind: "data", volume: volumeId, seq, commit: peek.commit, time: "" }, dataStart: RECORD_PREFIX_BYTES + len };
    bytes = await store.get(key, { offset: 0, length: RECORD_PREFIX_BYTES + len });
    if (!bytes) return undefined;
  }
  return decodeHeader(bytes, key);
}

/** The log changed while it was read (records swept, a checkpoint replaced): reading again will do. */
class LogMoved extends Error {
  constructor(readonly failure: BackendError) {
    super(failure.message);
  }
}

const missingRecord = (store: ObjectStore, volumeId: string, seq: number) =>
  new LogMoved(new BackendError(`volume ${volumeId}: log record ${seq} is missing from ${store.where}, though later ones are there`, { hint: "the volume's objects were changed behind kindling's back" }));

/**
 * Applies every record after the state's sequence number up to the log's end. `check` sees
 * each header before it is applied and may throw (a writer meeting another writer's record).
 */
export async function scanTail(store: ObjectStore, state: VolumeState, opts: { check?: (h: RecordHeader) => void } = {}): Promise<void> {
  await scan(store, state, opts).catch((err) => Promise.reject(err instanceof LogMoved ? err.failure : err));
}

async function scan(store: ObjectStore, state: VolumeState, opts: { check?: (h: RecordHeader) => void }): Promise<void> {
  for (let batch = FIRST_BATCH; ; batch = BATCH) {
    const seqs = Array.from({ length: batch }, (_, i) => state.seq + 1 + i);
    const got = await Promise.all(seqs.map((s) => readHeader(store, state.volumeId, s, { meta: state.metaOnly })));
    const miss = got.findIndex((h) => !h);
    for (const h of miss < 0 ? got : got.slice(0, miss)) {
      opts.check?.((h as DecodedHeader).header);
      state.apply((h as DecodedHeader).header, (h as DecodedHeader).dataStart);
    }
    if (miss < 0) continue;
    // A record after the missing one: a gap, unless both were appended while the batch was read.
    if (got.slice(miss + 1).some(Boolean)) throw missingRecord(store, state.volumeId, seqs[miss]);
    return;
  }
}

/** Applies the records after the state's sequence number, up to `tail` (which must be there). */
async function replayTo(store: ObjectStore, state: VolumeState, tail: number): Promise<void> {
  for (let next = state.seq + 1; next <= tail; next += BATCH) {
    const seqs = Array.from({ length: Math.min(BATCH, tail - next + 1) }, (_, i) => next + i);
    const headers = await Promise.all(seqs.map((s) => readHeader(store, state.volumeId, s, { meta: state.metaOnly })));
    headers.forEach((h, i) => {
      if (!h) throw missingRecord(store, state.volumeId, seqs[i]);
      state.apply(h.header, h.dataStart);
    });
  }
}

/** A checkpoint, or undefined when there is none at `seq`; `meta`: its header only (one small ranged GET). */
export async function loadCheckpoint(store: ObjectStore, volumeId: string, seq: number, opts: { meta?: boolean } = {}): Promise<VolumeState | undefined> {
  const key = checkpointKey(volumeId, seq);
  if (!opts.meta) {
    const bytes = await store.get(key);
    return bytes ? VolumeState.decode(bytes, key) : undefined;
  }
  let bytes = await store.get(key, { offset: 0, length: HEADER_GUESS });
  if (!bytes) return undefined;
  const len = checkpointHeaderLength(bytes, key);
  if (bytes.length < CHECKPOINT_PREFIX_BYTES + len) bytes = await store.get(key, { offset: 0, length: CHECKPOINT_PREFIX_BYTES + len });
  return bytes ? VolumeState.decodeMeta(bytes, key) : undefined;
}

/** The checkpoint the hint names: undefined when there is no usable hint; LogMoved when it names one just replaced. */
async function hintedCheckpoint(store: ObjectStore, volumeId: string, upTo: number | undefined, meta: boolean, lastTry: boolean): Promise<VolumeState | undefined> {
  const hint = await store.get(hintKey(volumeId));
  let seq: number | undefined;
  try {
    seq = hint ? (JSON.parse(hint.toString("utf8")) as { checkpoint?: number }).checkpoint : undefined;
  } catch {
    seq = undefined; // a hint is only ever a shortcut
  }
  if (seq === undefined || (upTo !== undefined && seq > upTo)) return undefined;
  const state = await loadCheckpoint(store, volumeId, seq, { meta });
  // The writer deletes an old checkpoint only after the hint names a newer one: read the hint again.
  if (!state && !lastTry) throw new LogMoved(new BackendError(`volume ${volumeId}: checkpoint ${seq} is gone`));
  return state;
}

async function newestCheckpointBefore(store: ObjectStore, volumeId: string, upTo: number, meta: boolean): Promise<VolumeState | undefined> {
  const seqs: number[] = [];
  for await (const o of store.list(checkpointKey(volumeId, 0).slice(0, -16))) {
    const seq = seqOfKey(o.key);
    if (seq !== undefined && seq <= upTo) seqs.push(seq);
  }
  for (const seq of seqs.sort((a, b) => b - a)) {
    const state = await loadCheckpoint(store, volumeId, seq, { meta });
    if (state) return state;
  }
  return undefined;
}

export interface LoadOptions {
  /** The state at this sequence number (a snapshot, a clone's parent) instead of at the log's end. */
  upTo?: number;
  /** With `upTo`: a checkpoint at or before it, while there is none at `upTo` itself. */
  base?: number;
  /** Without the map: see VolumeState's `metaOnly`. */
  meta?: boolean;
}

/**
 * The volume's state at its log's end (or at `upTo`): the nearest checkpoint, then the records
 * after it. NotFoundError when the volume has no log. Started over when the log moves under it.
 */
export async function loadState(store: ObjectStore, volumeId: string, opts: LoadOptions = {}): Promise<VolumeState> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await loadOnce(store, volumeId, opts, attempt === LOAD_ATTEMPTS);
    } catch (err) {
      if (!(err instanceof LogMoved)) throw err;
      if (attempt === LOAD_ATTEMPTS) throw err.failure;
    }
  }
}

async function loadOnce(store: ObjectStore, volumeId: string, opts: LoadOptions, lastTry: boolean): Promise<VolumeState> {
  const meta = opts.meta ?? false;
  const { upTo, base } = opts;
  let state: VolumeState | undefined;
  if (upTo !== undefined) {
    state = await loadCheckpoint(store, volumeId, upTo, { meta });
    // The base goes once the writer has made the checkpoint at `upTo` (read above) or once a
    // newer one stands before `upTo`, which the hint names.
    if (!state && base !== undefined && base >= 0 && base <= upTo) state = await loadCheckpoint(store, volumeId, base, { meta });
  }
  state ??= await hintedCheckpoint(store, volumeId, upTo, meta, lastTry);
  // An old state whose base went, the hint past it: the newest checkpoint before it, by LIST
  // (opening a snapshot or a clone is neither the write path nor recovery).
  if (!state && upTo !== undefined) state = await newestCheckpointBefore(store, volumeId, upTo, meta);
  state ??= new VolumeState(volumeId, meta);
  const notFound = () => new NotFoundError("volume", volumeId, { hint: `no log at ${store.where}` });
  if (upTo !== undefined) {
    try {
      await replayTo(store, state, upTo);
    } catch (err) {
      if (err instanceof LogMoved && state.seq < 0) throw notFound();
      throw err;
    }
  } else {
    await scan(store, state, {});
    if (state.seq < 0) throw notFound();
  }
  return state;
}

/**
 * Swift checks If-None-Match before it stores the body and not again after, so two creates of
 * one key at the same moment can both answer 201, and the newer replaces the older (measured on
 * the all-in-one: a snapshot's record appended while a commit uploaded took the commit's place).
 * There every create is read back: someone else's record at the key is a collision like a 412.
 * S3's create-only PUT is atomic and needs no read-back. Read-back narrows the window without
 * closing it (both creates can read back as their own before the later lands), so on Swift
 * nobody else creates a record while a writer holds the volume (handoff.ts).
 */
export async function lostCreate(store: ObjectStore, volumeId: string, seq: number, commit: string, opts: { meta: boolean }): Promise<DecodedHeader | undefined> {
  if (store.api !== "swift") return undefined;
  const there = await readHeader(store, volumeId, seq, { meta: true });
  if (!there || there.header.commit === commit) return undefined;
  return opts.meta ? there : readHeader(store, volumeId, seq);
}

/**
 * Appends a record at the next free sequence number (after `state`, which is brought up to date
 * on the way): a create-only PUT, retried at the next number when someone else got there first.
 * Returns the record's sequence number; `state` has it applied.
 */
export async function appendRecord(
  store: ObjectStore,
  state: VolumeState,
  kind: RecordKind,
  fields: Partial<RecordHeader> = {},
): Promise<number> {
  for (;;) {
    const seq = await tryAppend(store, state, kind, fields);
    if (seq !== undefined) return seq;
  }
}

/**
 * One attempt of appendRecord at the number after `state`: its sequence number, or undefined
 * when someone else's record is there (then applied, and `state` brought to the log's end).
 */
export async function tryAppend(store: ObjectStore, state: VolumeState, kind: RecordKind, fields: Partial<RecordHeader> = {}): Promise<number | undefined> {
  const seq = state.seq + 1;
  const header = newHeader(kind, state.volumeId, seq, fields);
  const body = encodeRecord(header);
  try {
    await store.put(logKey(state.volumeId, seq), body, { ifNoneMatch: true });
    const other = await lostCreate(store, state.volumeId, seq, header.commit, { meta: state.metaOnly });
    if (other) {
      state.apply(other.header, other.dataStart);
      await scanTail(store, state);
      return undefined;
    }
    state.apply(header, body.length);
    return seq;
  } catch (err) {
    if (!(err instanceof PreconditionFailed)) throw err;
    const there = await readHeader(store, state.volumeId, seq, { meta: state.metaOnly });
    if (!there) return undefined; // gone again (a store without atomic creates): try once more
    state.apply(there.header, there.dataStart);
    if (there.header.commit === header.commit) return seq; // our own earlier attempt landed
    await scanTail(store, state);
    return undefined;
  }
}

/** Saves the state as a checkpoint, then points the hint at it when it is the newest. */
export async function saveCheckpoint(store: ObjectStore, state: VolumeState, opts: { hint: boolean }): Promise<void> {
  await store.put(checkpointKey(state.volumeId, state.seq), state.encode());
  failpoint("checkpoint-before-hint");
  if (opts.hint) await store.put(hintKey(state.volumeId), Buffer.from(JSON.stringify({ checkpoint: state.seq })));
  state.checkpointSeq = Math.max(state.checkpointSeq, state.seq);
}

/**
 * Ends the pins of clones whose objects are gone (deleted behind kindling's back: a clone's own
 * delete unpins it first), so they hold no data and block no delete. A clone's genesis comes
 * before its pin, so a pin without a genesis is never a clone still being made.
 */
export async function dropVanishedClones(store: ObjectStore, state: VolumeState): Promise<void> {
  for (const child of [...state.pins.clones.keys()]) {
    if (await store.head(logKey(child, 0))) continue;
    await appendRecord(store, state, "unclone", { child });
  }
}
