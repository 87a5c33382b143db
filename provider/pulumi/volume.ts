import { isDeepStrictEqual } from "node:util";
import type { Backend, BackendConfig } from "../library/backend";
import type { ExpansionReport } from "../library/expansion";
import type { Volume } from "../library/volume";
import { InvalidInputError, NotFoundError } from "../util/errors";
import { newId } from "../util/ids";
import { plain } from "./plain";
import { backendFor } from "./backends";
import { checkBackend, checkProperties, checkWith, defaultName, type CheckFailure } from "./check";
import { changedIn, replacedBy, sameName } from "./diffs";
import { partialFailure } from "./failures";
import { isUnknown, volumeInputsSchema, type VolumeInputs } from "./inputs";
import { forgetOwner, ownedId, recordOwner } from "./ownership";
import { nameHeldByReplaced, Replacements } from "./replacements";
import { stableOutputs } from "./stables";
import { checkImage, originOf, volumeImageSource, type ImageOrigin } from "./volume-image";

export interface VolumeOutputs extends VolumeInputs, ImageOrigin {
  /** Always known once the volume exists, given or not. */
  sizeGiB: number;
  volumeId: string;
  status: string;
  backendName: string;
  location?: string;
  createdAt: string;
  dump: Record<string, unknown>;
  /** After an update that grew the volume: what each consumer must do to see the new size. */
  expansion?: Record<string, unknown>;
}

const INPUT_KEYS = Object.keys(volumeInputsSchema.shape);

/** Outputs an in-place update never changes (see stables.ts); the id comes first. */
const STABLE_KEYS = ["volumeId", "backendName", "createdAt", "location"] as const;

function outputs(inputs: VolumeInputs, volume: Volume, expansion?: ExpansionReport): VolumeOutputs {
  return plain({
    ...inputs,
    // The image its first bytes came from (its own, or its source volume's or snapshot's).
    ...originOf(volume.image),
    // A volume sized by its image has the size the image needed.
    sizeGiB: inputs.sizeGiB ?? volume.sizeGiB,
    volumeId: volume.id,
    status: volume.status,
    backendName: volume.backend.name,
    location: volume.location,
    createdAt: volume.createdAt,
    dump: volume.dump() as unknown as Record<string, unknown>,
    expansion: expansion as unknown as Record<string, unknown> | undefined,
  });
}

function backendOf(config: unknown): Promise<Backend> {
  return backendFor(config as BackendConfig);
}

/**
 * Tells a create after a crash from a replacement made while the old volume still exists
 * (`deleteBeforeReplace: false`), whose owner key names the old volume: taking that up would
 * have the engine delete the volume it was just given. Without the state's id, the old inputs
 * tell it: the id when check carried it there, else the name (unique per backend).
 */
const replacements = new Replacements<VolumeOutputs, Volume>((volume, olds) =>
  olds.volumeId !== undefined ? olds.volumeId === volume.id : olds.name === volume.name);

export async function check(olds: Partial<VolumeInputs>, news: Record<string, unknown>) {
  replacements.checked(news.ownerKey, olds);
  const failures: CheckFailure[] = checkProperties(volumeInputsSchema, news);
  const inputs = { ...news } as VolumeInputs;
  inputs.name ??= olds.name ?? defaultName(inputs.resourceName, inputs.ownerKey);
  if (inputs.snapshotId !== undefined && inputs.sourceVolumeId !== undefined) {
    failures.push({ property: "snapshotId", reason: "snapshotId: give at most one of snapshotId and sourceVolumeId" });
  }
  // An image says how big the volume must be; anything else needs the size.
  if (inputs.sizeGiB === undefined && inputs.image === undefined && !failures.some((f) => f.property === "sizeGiB")) {
    failures.push({ property: "sizeGiB", reason: "sizeGiB: is required (it may be left out only with image, whose size it then takes)" });
  }
  checkImage(inputs, failures);
  const known = (v: unknown) => v !== undefined && !isUnknown(v);
  if (known(olds.sizeGiB) && known(inputs.sizeGiB) && (inputs.sizeGiB as number) < (olds.sizeGiB as number) && !failures.some((f) => f.property === "sizeGiB")) {
    failures.push({ property: "sizeGiB", reason: `sizeGiB: ${inputs.sizeGiB} GiB is smaller than the volume's real size (${olds.sizeGiB} GiB); volumes only grow` });
  }
  const backend = checkBackend(inputs.backend, failures);
  if (backend) {
    if (known(inputs.extraSpecs) && !failures.some((f) => f.property === "extraSpecs")) checkWith("extraSpecs", failures, () => backend.driver.validateExtraSpecs(inputs.extraSpecs ?? {}));
    if (known(inputs.qosSpecs) && !failures.some((f) => f.property === "qosSpecs")) checkWith("qosSpecs", failures, () => backend.driver.validateQosSpecs(inputs.qosSpecs ?? {}));
    if (known(inputs.pool) && !failures.some((f) => f.property === "pool") && !backend.poolNames().includes(inputs.pool as string)) {
      failures.push({ property: "pool", reason: `pool: backend ${backend.name} has no pool ${JSON.stringify(inputs.pool)}; pools: ${backend.poolNames().join(", ")}` });
    }
  }
  if (!failures.length) {
    Object.assign(inputs, await stableOutputs(olds, inputs, STABLE_KEYS, async (opened) => {
      const id = await ownedId(opened, "volume", inputs.ownerKey);
      return id ? outputs(inputs, await opened.getVolume(id)) : undefined;
    }));
  }
  return { inputs, failures };
}

export async function diff(id: string, olds: VolumeOutputs, news: VolumeInputs) {
  replacements.diffed(news.ownerKey ?? olds.ownerKey, id, olds);
  // A shrink is refused by check (against the recorded size) and by update; diff runs during
  // refresh too, where throwing would stop the refresh that is about to record the real size.
  // Another image (or other digests of it) is other data: a new volume. The reference is
  // compared as written: a name that now matches a newer image replaces nothing (imageId
  // records which one the volume holds).
  const replaces = replacedBy(olds, news, ["pool", "image", "imageSha256", "imageSha512"]);
  // The source (snapshotId, sourceVolumeId) mattered only when the data was copied: a new
  // value is recorded in place and the volume keeps its data, even when the old snapshot is
  // gone and a new one stands in its place. `adopt` too matters only at creation;
  // resourceName and ownerKey never change the volume.
  // No sizeGiB (a volume sized by its image) asks for no size: the one it has stays.
  const sized = news.sizeGiB === undefined ? { ...news, sizeGiB: olds.sizeGiB } : news;
  const inPlace = changedIn(olds, sized, ["sizeGiB", "name", "description", "metadata", "qosSpecs", "extraSpecs", "backend", "pool", "snapshotId", "sourceVolumeId", "allowUnverifiedImage"]);
  return {
    changes: replaces.length > 0 || inPlace,
    replaces,
    // The engine ignores this today; check carries these outputs instead (see stables.ts).
    stables: replaces.length ? [] : [...STABLE_KEYS],
    // Names are unique per backend: a replacement keeping its name must go first.
    deleteBeforeReplace: replaces.length > 0 && sameName(olds, news),
  };
}

/**
 * Creates the volume, or takes up the one an interrupted create of this resource made (found
 * by the owner key, under this name). The volume the state still holds for this resource is
 * never taken up nor deleted: the replacement is made beside it, and under its name refused.
 */
export async function create(inputs: VolumeInputs): Promise<{ id: string; outs: VolumeOutputs }> {
  const backend = await backendOf(inputs.backend);
  if (inputs.adopt) return adopt(backend, inputs);
  const previous = await ownedId(backend, "volume", inputs.ownerKey);
  const found = previous ? await backend.getVolume(previous).catch((err) => (err instanceof NotFoundError ? undefined : Promise.reject(err))) : undefined;
  const replacing = found && replacements.heldByState(inputs.ownerKey, found) ? found : undefined;
  if (replacing && replacing.name === inputs.name) throw nameHeldByReplaced("volume", "Volume", replacing.name);
  // Only a volume of this name is what an interrupted create of this resource made; under
  // another name it may be the one this replaces (the engine told nothing of it): left alone.
  if (found && !replacing && found.name === inputs.name) {
    // The record alone does not say the volume is there: one deleted from storage behind
    // kindling's back (dropped from the state by a refresh) still has an available record.
    if ((found.status === "available" || found.status === "in-use") && (await found.inspect()).exists) {
      replacements.tookUp(found.id, inputs.ownerKey);
      return { id: found.id, outs: outputs(inputs, found) };
    }
    await found.delete(); // half made when the last run was killed, or gone from storage: start again
  }
  const id = newId();
  await recordOwner(backend, "volume", inputs.ownerKey, id);
  const options = { id, name: inputs.name, sizeGiB: inputs.sizeGiB, description: inputs.description, metadata: inputs.metadata };
  let volume: Volume;
  try {
    if (inputs.image) {
      volume = await backend.createVolumeFromImage(await volumeImageSource(inputs), { ...options, pool: inputs.pool, extraSpecs: inputs.extraSpecs, qosSpecs: inputs.qosSpecs, allowUnverified: inputs.allowUnverifiedImage });
    } else if (inputs.snapshotId) {
      volume = await (await backend.getSnapshot(inputs.snapshotId)).createVolume(options);
    } else if (inputs.sourceVolumeId) {
      volume = await (await backend.getVolume(inputs.sourceVolumeId)).clone(options);
    } else {
      volume = await backend.createVolume({ ...options, sizeGiB: inputs.sizeGiB as number, pool: inputs.pool, extraSpecs: inputs.extraSpecs, qosSpecs: inputs.qosSpecs });
    }
    // A copy takes its source's specs; the program's own, when given, win.
    if ((inputs.snapshotId || inputs.sourceVolumeId) && (inputs.qosSpecs || inputs.extraSpecs)) {
      await volume.update({ qosSpecs: inputs.qosSpecs, extraSpecs: inputs.extraSpecs });
    }
  } catch (err) {
    const left = await backend.getVolume(id).catch(() => undefined);
    if (left) throw partialFailure(id, outputs(inputs, left) as unknown as Record<string, unknown>, err);
    // Nothing made: the owner key names again what the state holds, if anything.
    if (replacing) await recordOwner(backend, "volume", inputs.ownerKey, replacing.id);
    else await forgetOwner(backend, "volume", inputs.ownerKey, id);
    throw err;
  }
  return { id: volume.id, outs: outputs(inputs, volume) };
}

/** Takes an existing volume under management, data untouched; grows it if the program asks. */
async function adopt(backend: Backend, inputs: VolumeInputs): Promise<{ id: string; outs: VolumeOutputs }> {
  const volume = await backend.getVolume(inputs.adopt as string);
  const sizeGiB = inputs.sizeGiB as number; // check requires it without an image
  if (sizeGiB < volume.sizeGiB) {
    throw new InvalidInputError("sizeGiB", `${sizeGiB} GiB is smaller than the adopted volume's size (${volume.sizeGiB} GiB); set sizeGiB to at least that`);
  }
  if (sizeGiB > volume.sizeGiB) await volume.extend(sizeGiB);
  await volume.update({ name: inputs.name, description: inputs.description, metadata: inputs.metadata, qosSpecs: inputs.qosSpecs, extraSpecs: inputs.extraSpecs });
  await recordOwner(backend, "volume", inputs.ownerKey, volume.id);
  // Another resource may still hold it, and be deleted in this deployment (see replacements.ts).
  replacements.tookUp(volume.id, inputs.ownerKey);
  return { id: volume.id, outs: outputs(inputs, volume) };
}

/** What the backend really holds: a volume gone from storage leaves the state. */
export async function read(id: string, props: VolumeOutputs) {
  const backend = await backendOf(props.backend);
  const dump = (props.dump ?? {}) as { pool?: string; location?: string; extraSpecs?: Record<string, string>; qosSpecs?: Record<string, string> };
  const inspection = await backend.driver.inspect({
    id,
    pool: dump.pool ?? props.pool ?? backend.driver.defaultPool(),
    sizeGiB: props.sizeGiB,
    extraSpecs: dump.extraSpecs ?? {},
    qosSpecs: dump.qosSpecs ?? {},
    location: dump.location,
  });
  if (!inspection.exists) return {};
  const record = await backend.getVolume(id).catch(() => undefined);
  const outs: VolumeOutputs = {
    ...(record ? outputs(props, record) : props),
    sizeGiB: inspection.sizeGiB ?? props.sizeGiB,
    location: inspection.location ?? props.location,
  };
  const inputs = Object.fromEntries([...INPUT_KEYS, ...STABLE_KEYS].filter((k) => k in outs).map((k) => [k, outs[k as keyof VolumeOutputs]]));
  return { id, props: plain(outs), inputs: plain(inputs) };
}

/** Grows the volume and updates its record; a new source is only recorded (see diff). */
export async function update(id: string, olds: VolumeOutputs, news: VolumeInputs) {
  const backend = await backendOf(news.backend);
  const volume = await backend.getVolume(id);
  const real = (await volume.inspect()).sizeGiB ?? volume.sizeGiB;
  if (news.sizeGiB !== undefined && news.sizeGiB < real) {
    throw new InvalidInputError("sizeGiB", `${news.sizeGiB} GiB is smaller than the volume's real size (${real} GiB); volumes only grow`);
  }
  let expansion: ExpansionReport | undefined;
  if (news.sizeGiB !== undefined && news.sizeGiB > volume.sizeGiB) {
    await volume.extend(news.sizeGiB);
    expansion = await volume.expansion();
  }
  const changes: Record<string, unknown> = {};
  for (const key of ["name", "description", "metadata", "qosSpecs", "extraSpecs"] as const) {
    if (!isDeepStrictEqual(olds[key], news[key]) && news[key] !== undefined) changes[key] = news[key];
  }
  if (Object.keys(changes).length) await volume.update(changes);
  return { outs: outputs(news, volume, expansion) };
}

export async function remove(id: string, props: VolumeOutputs): Promise<void> {
  const backend = await backendOf(props.backend);
  // The old resource of a replacement whose create took up this very volume (see replacements.ts).
  const handed = replacements.handedOver(id);
  if (handed) {
    if (handed.ownerKey !== props.ownerKey) await forgetOwner(backend, "volume", props.ownerKey, id);
    return;
  }
  const volume = await backend.getVolume(id).catch((err) => (err instanceof NotFoundError ? undefined : Promise.reject(err)));
  if (volume) await volume.delete();
  await forgetOwner(backend, "volume", props.ownerKey, id);
}
