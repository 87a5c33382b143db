import { InvalidInputError } from "../../util/errors";
import { isId } from "../../util/names";

// Where a volume's objects live in the bucket or container. Every key starts with the volume's
// id (never a user-given name), so nothing a user types reaches a key. Sequence numbers are 16
// hex digits, so keys sort in log order.

const PREFIX = "kindling/v1/vol/";

export function checkedId(id: string): string {
  if (!isId(id)) throw new InvalidInputError("id", `${JSON.stringify(id)} is not a kindling id`);
  return id;
}

export const seqHex = (seq: number) => seq.toString(16).padStart(16, "0");

export const volumePrefix = (volumeId: string) => `${PREFIX}${checkedId(volumeId)}/`;
/** One commit: immutable, created with If-None-Match: * (the commit and the fence in one step). */
export const logKey = (volumeId: string, seq: number) => `${volumePrefix(volumeId)}log/${seqHex(seq)}`;
/** The whole state as of a sequence number, so opening never replays the log from its start. */
export const checkpointKey = (volumeId: string, seq: number) => `${volumePrefix(volumeId)}ckpt/${seqHex(seq)}`;
/** Best effort: the newest checkpoint's sequence number; stale or missing only costs time. */
export const hintKey = (volumeId: string) => `${volumePrefix(volumeId)}hint`;
/** The writer's lease: who may write, until when. */
export const leaseKey = (volumeId: string) => `${volumePrefix(volumeId)}lease`;
/** Swift: a record another process wants the volume's writer to append (handoff.ts). */
export const askKey = (volumeId: string) => `${volumePrefix(volumeId)}ask`;
/** The writer's answer to one ask: where it appended the record. */
export const answerKey = (volumeId: string, askId: string) => `${volumePrefix(volumeId)}answer/${askId}`;
/** A snapshot: the sequence number it holds the volume at. */
export const snapshotKey = (volumeId: string, snapshotId: string) => `${volumePrefix(volumeId)}snap/${checkedId(snapshotId)}`;

export function seqOfKey(key: string): number | undefined {
  const m = /\/(?:log|ckpt)\/([0-9a-f]{16})$/.exec(key);
  return m ? parseInt(m[1], 16) : undefined;
}
