import { BackendError, NotFoundError } from "../../util/errors";
import { checkpointKey, hintKey, logKey } from "./layout";
import { decodeHeader, encodeRecord, headerLength, newHeader, RECORD_PREFIX_BYTES, type DecodedHeader, type RecordHeader, type RecordKind } from "./record";
import { failpoint } from "./failpoints";
import { PreconditionFailed, type ObjectStore } from "./store";
import { VolumeState } from "./state";

// Reading and appending a volume's log. The log above the newest checkpoint has no gaps (a
// commit is always at the next sequence number), so its end is found by probing, never by
// LIST: doubling steps, then a binary search.

/** How many requests for record headers are in flight while a state is rebuilt. */
const HEADER_READS = 16;
/** What a first ranged GET of a record reads: its header almost always fits. */
const HEADER_GUESS = 64 * 1024;

export async function readHeader(store: ObjectStore, volumeId: string, seq: number): Promise<DecodedHeader | undefined> {
  const key = logKey(volumeId, seq);
  let bytes = await store.get(key, { offset: 0, length: HEADER_GUESS });
  if (!bytes) return undefined;
  const len = headerLength(bytes, key);
  if (bytes.length < RECORD_PREFIX_BYTES + len) {
    bytes = await store.get(key, { offset: 0, length: RECORD_PREFIX_BYTES + len });
    if (!bytes) return undefined;
  }
  return decodeHeader(bytes, key);
}

const exists = async (store: ObjectStore, volumeId: string, seq: number) => (await store.head(logKey(volumeId, seq))) !== undefined;

/** The last sequence number in the log, given one known to exist (`from`). */
export async function probeTail(store: ObjectStore, volumeId: string, from: number): Promise<number> {
  let present = from;
  let step = 1;
  let absent: number | undefined;
  while (absent === undefined) {
    const probe = present + step;
    if (await exists(store, volumeId, probe)) {
      present = probe;
      step *= 2;
    } else absent = probe;
  }
  while (absent - present > 1) {
    const mid = Math.floor((present + absent) / 2);
    if (await exists(store, volumeId, mid)) present = mid;
    else absent = mid;
  }
  return present;
}

/** The newest checkpoint the hint names, if it is there. */
async function hintedCheckpoint(store: ObjectStore, volumeId: string, upTo: number | undefined): Promise<VolumeState | undefined> {
  const hint = await store.get(hintKey(volumeId));
  let seq: number | undefined;
  try {
    seq = hint ? (JSON.parse(hint.toString("utf8")) as { checkpoint?: number }).checkpoint : undefined;
  } catch {
    seq = undefined; // a hint is only ever a shortcut
  }
  if (seq === undefined || (upTo !== undefined && seq > upTo)) return undefined;
  return loadCheckpoint(store, volumeId, seq);
}

export async function loadCheckpoint(store: ObjectStore, volumeId: string, seq: number): Promise<VolumeState | undefined> {
  const key = checkpointKey(volumeId, seq);
  const bytes = await store.get(key);
  return bytes ? VolumeState.decode(bytes, key) : undefined;
}

/**
 * The volume's state at its log's end (or at `upTo`, for a snapshot or a clone's parent): the
 * nearest checkpoint, then the records after it. NotFoundError when the volume has no log.
 */
export async function loadState(store: ObjectStore, volumeId: string, opts: { upTo?: number } = {}): Promise<VolumeState> {
  let state = opts.upTo !== undefined ? await loadCheckpoint(store, volumeId, opts.upTo) : undefined;
  state ??= await hintedCheckpoint(store, volumeId, opts.upTo);
  if (!state) {
    state = new VolumeState(volumeId);
    if (!(await exists(store, volumeId, 0))) throw new NotFoundError("volume", volumeId, { hint: `no log at ${store.where}` });
  }
  const tail = opts.upTo ?? (await probeTail(store, volumeId, Math.max(state.seq, 0)));
  await replay(store, state, tail);
  return state;
}

/** Applies the records after the state's sequence number, up to `tail`. */
export async function replay(store: ObjectStore, state: VolumeState, tail: number): Promise<void> {
  for (let next = state.seq + 1; next <= tail; next += HEADER_READS) {
    const seqs = Array.from({ length: Math.min(HEADER_READS, tail - next + 1) }, (_, i) => next + i);
    const headers = await Promise.all(seqs.map((s) => readHeader(store, state.volumeId, s)));
    headers.forEach((h, i) => {
      if (!h) throw new BackendError(`volume ${state.volumeId}: log record ${seqs[i]} is missing from ${store.where}, though later ones are there`, { hint: "the volume's objects were changed behind kindling's back" });
      state.apply(h.header, h.dataStart);
    });
  }
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
    const seq = state.seq + 1;
    const header = newHeader(kind, state.volumeId, seq, fields);
    const body = encodeRecord(header);
    try {
      await store.put(logKey(state.volumeId, seq), body, { ifNoneMatch: true });
      state.apply(header, body.length);
      return seq;
    } catch (err) {
      if (!(err instanceof PreconditionFailed)) throw err;
      const there = await readHeader(store, state.volumeId, seq);
      if (!there) continue; // gone again (a store without atomic creates): try once more
      if (there.header.commit === header.commit) {
        state.apply(there.header, there.dataStart); // our own earlier attempt landed
        return seq;
      }
      state.apply(there.header, there.dataStart);
      await replay(store, state, await probeTail(store, state.volumeId, state.seq));
    }
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
