import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { BackendError } from "../../util/errors";
import { answerKey, askKey } from "./layout";
import type { StoreLease } from "./lease";
import { appendRecord, scanTail, tryAppend } from "./log";
import type { RecordHeader, RecordKind } from "./record";
import type { VolumeState } from "./state";
import type { ObjectStore } from "./store";

// Swift can let two creates of one key at the same moment both succeed, the newer replacing
// the older (log.ts, lostCreate): a snapshot's record created while the writer's commit uploads
// can take the commit's place, or the commit the snapshot's, and each side reads its own back.
// So on Swift, while a writer holds the volume, no other process creates its log records: it
// rings the volume's doorbell (`ask`) with the record it wants, and the writer, which looks
// there between commits, appends the record itself and answers (`answer/<id>`) with its
// sequence number. Every record is then created by one process, one after another. On S3 a
// create is atomic, and everyone appends directly.

/** The records another process may want in a volume's log; never one only a writer makes. */
const ASKABLE: ReadonlySet<RecordKind> = new Set<RecordKind>(["snapshot", "snapdel", "clone", "unclone", "resize"]);
/** The fields each of them may carry: an ask can set nothing else of the record. */
const ASK_FIELDS = ["snapshot", "base", "child", "at", "sizeBytes"] as const;

/** How often a writer looks at its doorbell (Swift only; one small GET). */
export const ASK_POLL_MS = 50;
/** A ring can be lost (two rang at once, or the writer cleared it as it answered another): ring again after this. */
const RING_AGAIN_MS = 1_000;
/** An ask older than this is left alone: whoever rang has given up on it. */
const ASK_LIFE_MS = 60_000;
/** How long past the lease's life a process waits for the writer's answer before it says so. */
const ANSWER_GRACE_MS = 10_000;

export interface Ask {
  id: string;
  kind: RecordKind;
  fields: Partial<RecordHeader>;
  /** Milliseconds since the epoch, the asker's clock. */
  until: number;
}

/**
 * Appends a record someone other than the volume's writer wants (a snapshot, a clone's pin,
 * an extend): directly on S3, or on Swift while no writer holds the volume; through the writer
 * otherwise. `state` is brought up to the record (and past it, to the log's end).
 */
export async function appendBeside(
  store: ObjectStore,
  state: VolumeState,
  kind: RecordKind,
  fields: Partial<RecordHeader>,
  lease: StoreLease,
): Promise<number> {
  if (store.api !== "swift") return appendRecord(store, state, kind, fields);
  for (;;) {
    // Looked at before every attempt: a writer that took the volume meanwhile appends from now on.
    if (await lease.heldByWriter()) {
      const seq = await askWriter(store, state.volumeId, kind, fields, lease);
      if (seq === undefined) continue; // the writer went: look again
      await scanTail(store, state);
      return seq;
    }
    const seq = await tryAppend(store, state, kind, fields);
    if (seq !== undefined) return seq;
  }
}

/** Rings and waits for the answer; undefined when the writer is gone without one. */
async function askWriter(store: ObjectStore, volumeId: string, kind: RecordKind, fields: Partial<RecordHeader>, lease: StoreLease): Promise<number | undefined> {
  const id = randomBytes(12).toString("hex");
  const ask: Ask = { id, kind, fields, until: Date.now() + ASK_LIFE_MS };
  const body = Buffer.from(JSON.stringify(ask));
  const started = performance.now();
  // A writer that stopped answering loses its lease in time, and then the record is appended
  // directly: only a writer that keeps renewing and never answers makes this an error.
  const timeoutMs = lease.heldAtMostMs + ANSWER_GRACE_MS;
  let rung = -Infinity;
  for (let wait = 5; ; wait = Math.min(wait * 2, ASK_POLL_MS)) {
    if (performance.now() - rung >= RING_AGAIN_MS) {
      if (rung !== -Infinity && !(await lease.heldByWriter())) {
        // Gone: its ask must not be found by the next writer, which would append it again.
        await store.delete(askKey(volumeId));
        return undefined;
      }
      await store.put(askKey(volumeId), body);
      rung = performance.now();
    }
    await sleep(wait);
    const answer = await store.get(answerKey(volumeId, id));
    if (answer) {
      await store.delete(answerKey(volumeId, id));
      return (JSON.parse(answer.toString("utf8")) as { seq: number }).seq;
    }
    if (performance.now() - started > timeoutMs) {
      throw new BackendError(`volume ${volumeId}: its writer (${(await lease.holder()) ?? "gone now"}) did not append the ${kind} record within ${Math.round(timeoutMs / 1000)} s`, {
        hint: "on Swift the volume's writer appends other processes' records; it may be stuck on the store, or older than this kindling",
      });
    }
  }
}

/** The ask at the doorbell, when there is one still wanted and of a kind another may ask for. */
export async function readAsk(store: ObjectStore, volumeId: string): Promise<Ask | undefined> {
  const body = await store.get(askKey(volumeId));
  if (!body) return undefined;
  let raw: Partial<Ask>;
  try {
    raw = JSON.parse(body.toString("utf8")) as Partial<Ask>;
  } catch {
    return undefined;
  }
  if (typeof raw.id !== "string" || !/^[0-9a-f]{24}$/.test(raw.id) || !ASKABLE.has(raw.kind as RecordKind)) return undefined;
  if (typeof raw.until !== "number" || raw.until < Date.now()) return undefined;
  const given = (raw.fields ?? {}) as Record<string, unknown>;
  const fields: Record<string, unknown> = {};
  for (const f of ASK_FIELDS) if (given[f] !== undefined) fields[f] = given[f];
  return { id: raw.id, kind: raw.kind as RecordKind, fields: fields as Partial<RecordHeader>, until: raw.until };
}

/** The writer's answer: the record is at `seq`. The doorbell is cleared (an ask rung meanwhile is rung again). */
export async function answerAsk(store: ObjectStore, volumeId: string, id: string, seq: number): Promise<void> {
  await store.put(answerKey(volumeId, id), Buffer.from(JSON.stringify({ seq })));
  await store.delete(askKey(volumeId));
}
