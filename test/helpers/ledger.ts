import type { Outcome } from "./hosts";

/** A record as the ledger compares it: its id, and the size or the volume it belongs to. */
export interface Held {
  volumes: Array<{ id: string; name: string; sizeGiB: number }>;
  snapshots: Array<{ id: string; name: string; volumeId: string }>;
}

/** Failures a racing host must get, and may: its step came second. */
const SECOND: Record<string, string[]> = {
  create: ["CONFLICT"],
  snapshot: ["CONFLICT"],
  clone: ["CONFLICT"],
  "delete-volume": ["NOT_FOUND"],
  "delete-snapshot": ["NOT_FOUND"],
};

/**
 * Everything the records hold that the hosts' outcomes say they should not, as sentences (empty
 * when they agree): every name was made by exactly one step (nothing duplicated), a failure was
 * one that a step coming second gets, every object made is there with the id its maker was told
 * unless a delete of it succeeded (nothing lost), every volume has the size of its largest
 * successful extend, every snapshot belongs to the volume it was taken of, and nothing is there
 * that no step made.
 */
export function ledgerProblems(outcomes: Outcome[], held: Held): string[] {
  const problems: string[] = [];
  const made = new Map<string, Outcome>();
  const deleted = new Set<string>();
  const grownTo = new Map<string, number>();
  for (const o of outcomes) {
    const name = "name" in o ? o.name : o.volume;
    if (o.ok && (o.op === "create" || o.op === "snapshot" || o.op === "clone")) {
      if (made.has(o.name)) problems.push(`${o.name} was made twice (ids ${made.get(o.name)?.id} and ${o.id})`);
      else made.set(o.name, o);
    }
    if (o.ok && (o.op === "delete-volume" || o.op === "delete-snapshot")) deleted.add(o.name);
    if (o.ok && o.op === "extend") grownTo.set(o.volume, Math.max(grownTo.get(o.volume) ?? 0, o.sizeGiB));
    if (!o.ok && o.op !== "extend" && !SECOND[o.op].includes(o.code ?? "")) problems.push(`${o.op} ${name} failed: ${o.code}: ${o.message}`);
  }
  for (const o of outcomes) {
    if (o.ok || o.op !== "extend") continue;
    // An extend that came second found the volume grown past it already, or deleted.
    const passed = o.code === "INVALID_INPUT" && (grownTo.get(o.volume) ?? 0) > o.sizeGiB;
    const gone = o.code === "NOT_FOUND" && deleted.has(o.volume);
    if (!passed && !gone) problems.push(`extend ${o.volume} to ${o.sizeGiB} GiB failed: ${o.code}: ${o.message}`);
  }
  const tried = new Set(outcomes.flatMap((o) => (o.op === "create" || o.op === "snapshot" || o.op === "clone" ? [o.name] : [])));
  for (const name of tried) if (!made.has(name)) problems.push(`no step made ${name}: every attempt failed`);

  const volumes = new Map(held.volumes.map((v) => [v.name, v]));
  const snapshots = new Map(held.snapshots.map((s) => [s.name, s]));
  if (volumes.size !== held.volumes.length) problems.push(`volume names held twice: ${held.volumes.length} records, ${volumes.size} names`);
  if (snapshots.size !== held.snapshots.length) problems.push(`snapshot names held twice: ${held.snapshots.length} records, ${snapshots.size} names`);
  for (const [name, maker] of made) {
    const record = maker.op === "snapshot" ? snapshots.get(name) : volumes.get(name);
    if (deleted.has(name)) {
      if (record) problems.push(`${name} is still there after a delete of it succeeded`);
      continue;
    }
    if (!record) {
      problems.push(`${name} (made, never deleted) is lost`);
      continue;
    }
    if (record.id !== maker.id) problems.push(`${name} is ${record.id}, not ${maker.id} as its maker was told`);
    if (maker.op === "snapshot") {
      const of = made.get(maker.volume)?.id;
      const volumeId = (record as Held["snapshots"][number]).volumeId;
      if (volumeId !== of) problems.push(`snapshot ${name} belongs to ${volumeId}, not to ${maker.volume} (${of})`);
    } else {
      // The size it was made with, or that of its largest extend that succeeded.
      const expected = Math.max(maker.bornGiB ?? 0, grownTo.get(name) ?? 0);
      const size = (record as Held["volumes"][number]).sizeGiB;
      if (size !== expected) problems.push(`volume ${name} is ${size} GiB, expected ${expected} GiB`);
    }
  }
  for (const name of [...volumes.keys(), ...snapshots.keys()]) if (!made.has(name)) problems.push(`${name} is there, but no step made it`);
  return problems;
}
