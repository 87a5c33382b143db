import { isDeepStrictEqual } from "node:util";
import type { Backend, BackendConfig } from "../library/backend";
import type { Snapshot } from "../library/snapshot";
import { NotFoundError } from "../util/errors";
import { newId } from "../util/ids";
import { plain } from "./plain";
import { backendFor } from "./backends";
import { checkBackend, checkProperties, defaultName } from "./check";
import { changedIn, replacedBy, sameName } from "./diffs";
import { partialFailure } from "./failures";
import { snapshotInputsSchema, type SnapshotInputs } from "./inputs";
import { forgetOwner, ownedId, recordOwner } from "./ownership";
import { nameHeldByReplaced, Replacements } from "./replacements";
import { stableOutputs } from "./stables";

export interface SnapshotOutputs extends SnapshotInputs {
  snapshotId: string;
  volumeSizeGiB: number;
  status: string;
  createdAt: string;
  dump: Record<string, unknown>;
}

const INPUT_KEYS = Object.keys(snapshotInputsSchema.shape);

/** Outputs an in-place update never changes (see stables.ts); the id comes first. */
const STABLE_KEYS = ["snapshotId", "volumeSizeGiB", "createdAt"] as const;

function outputs(inputs: SnapshotInputs, snapshot: Snapshot): SnapshotOutputs {
  return plain({
    ...inputs,
    snapshotId: snapshot.id,
    volumeSizeGiB: snapshot.volumeSizeGiB,
    status: snapshot.status,
    createdAt: snapshot.createdAt,
    dump: snapshot.dump() as unknown as Record<string, unknown>,
  });
}

function backendOf(config: unknown): Promise<Backend> {
  return backendFor(config as BackendConfig);
}

const missing = (err: unknown) => (err instanceof NotFoundError ? undefined : Promise.reject(err));

/**
 * As for volumes (see volume.ts): a replacement made beside the old snapshot never takes it up.
 * Without the state's id, the old inputs tell it: the id when check carried it there, else the
 * name (unique per backend) and the volume.
 */
const replacements = new Replacements<SnapshotOutputs, Snapshot>((snapshot, olds) =>
  olds.snapshotId !== undefined ? olds.snapshotId === snapshot.id : olds.name === snapshot.name && olds.volumeId === snapshot.volumeId);

export async function check(olds: Partial<SnapshotInputs>, news: Record<string, unknown>) {
  replacements.checked(news.ownerKey, olds);
  const failures = checkProperties(snapshotInputsSchema, news);
  const inputs = { ...news } as SnapshotInputs;
  inputs.name ??= olds.name ?? defaultName(inputs.resourceName, inputs.ownerKey);
  checkBackend(inputs.backend, failures);
  if (!failures.length) {
    Object.assign(inputs, await stableOutputs(olds, inputs, STABLE_KEYS, async (opened) => {
      const id = await ownedId(opened, "snapshot", inputs.ownerKey);
      return id ? outputs(inputs, await opened.getSnapshot(id)) : undefined;
    }));
  }
  return { inputs, failures };
}

/** A snapshot of another volume is another snapshot; its name and descriptions change in place. */
export async function diff(id: string, olds: SnapshotOutputs, news: SnapshotInputs) {
  replacements.diffed(news.ownerKey ?? olds.ownerKey, id, olds);
  const replaces = replacedBy(olds, news, ["volumeId"]);
  const inPlace = changedIn(olds, news, ["name", "description", "metadata", "backend", "volumeId"]);
  return {
    changes: replaces.length > 0 || inPlace,
    replaces,
    // The engine ignores this today; check carries these outputs instead (see stables.ts).
    stables: replaces.length ? [] : [...STABLE_KEYS],
    deleteBeforeReplace: replaces.length > 0 && sameName(olds, news),
  };
}

/**
 * Takes a snapshot, or takes up the one an interrupted create of this resource made; never the
 * one the state still holds for this resource (see volume.ts).
 */
export async function create(inputs: SnapshotInputs): Promise<{ id: string; outs: SnapshotOutputs }> {
  const backend = await backendOf(inputs.backend);
  const previous = await ownedId(backend, "snapshot", inputs.ownerKey);
  const found = previous ? await backend.getSnapshot(previous).catch(missing) : undefined;
  const replacing = found && replacements.heldByState(inputs.ownerKey, found) ? found : undefined;
  if (replacing && replacing.name === inputs.name) throw nameHeldByReplaced("snapshot", "Snapshot", replacing.name);
  // As for volumes: another name or volume may mean the snapshot this one replaces, not a leftover.
  if (found && !replacing && found.name === inputs.name && found.volumeId === inputs.volumeId) {
    if (found.status === "available") {
      replacements.tookUp(found.id, inputs.ownerKey);
      return { id: found.id, outs: outputs(inputs, found) };
    }
    await found.delete(); // half made when the last run was killed: start again
  }
  const volume = await backend.getVolume(inputs.volumeId);
  const id = newId();
  await recordOwner(backend, "snapshot", inputs.ownerKey, id);
  try {
    const snapshot = await volume.createSnapshot({ id, name: inputs.name, description: inputs.description, metadata: inputs.metadata });
    return { id: snapshot.id, outs: outputs(inputs, snapshot) };
  } catch (err) {
    const left = await backend.getSnapshot(id).catch(() => undefined);
    if (left) throw partialFailure(id, outputs(inputs, left) as unknown as Record<string, unknown>, err);
    // Nothing made: the owner key names again what the state holds, if anything.
    if (replacing) await recordOwner(backend, "snapshot", inputs.ownerKey, replacing.id);
    else await forgetOwner(backend, "snapshot", inputs.ownerKey, id);
    throw err;
  }
}

export async function read(id: string, props: SnapshotOutputs) {
  const backend = await backendOf(props.backend);
  const dump = (props.dump ?? {}) as { pool?: string; location?: string; volumeId?: string; volumeSizeGiB?: number };
  const inspection = await backend.driver.inspectSnapshot({
    id,
    volumeId: props.volumeId,
    volumeSizeGiB: props.volumeSizeGiB,
    pool: dump.pool ?? backend.driver.defaultPool(),
    location: dump.location,
  });
  if (!inspection.exists) return {};
  const record = await backend.getSnapshot(id).catch(() => undefined);
  const outs = record ? outputs(props, record) : props;
  const inputs = Object.fromEntries([...INPUT_KEYS, ...STABLE_KEYS].filter((k) => k in outs).map((k) => [k, outs[k as keyof SnapshotOutputs]]));
  return { id, props: plain(outs), inputs: plain(inputs) };
}

export async function update(id: string, olds: SnapshotOutputs, news: SnapshotInputs) {
  const backend = await backendOf(news.backend);
  const snapshot = await backend.getSnapshot(id);
  const changes: Record<string, unknown> = {};
  for (const key of ["name", "description", "metadata"] as const) {
    if (!isDeepStrictEqual(olds[key], news[key]) && news[key] !== undefined) changes[key] = news[key];
  }
  if (Object.keys(changes).length) await snapshot.update(changes);
  return { outs: outputs(news, snapshot) };
}

export async function remove(id: string, props: SnapshotOutputs): Promise<void> {
  const backend = await backendOf(props.backend);
  // The old resource of a replacement whose create took up this very snapshot (see replacements.ts).
  const handed = replacements.handedOver(id);
  if (handed) {
    if (handed.ownerKey !== props.ownerKey) await forgetOwner(backend, "snapshot", props.ownerKey, id);
    return;
  }
  const snapshot = await backend.getSnapshot(id).catch(missing);
  if (snapshot) await snapshot.delete();
  await forgetOwner(backend, "snapshot", props.ownerKey, id);
}
