import { isDeepStrictEqual } from "node:util";
import type { Backend, BackendConfig } from "../library/backend";
import { copySourceToImage, imageSourceFor, type CopyToImageOptions } from "../library/images";
import type { ImageRecord, ImageService, ImageUpdate, UploadResult } from "../images/contract";
import { isReservedField } from "../images/glance/record";
import { ConflictError, NotFoundError, errorMessage } from "../util/errors";
import { plain } from "./plain";
import { backendFor } from "./backends";
import { checkBackend, checkProperties, defaultName, type CheckFailure } from "./check";
import { changedIn, replacedBy } from "./diffs";
import { imageServices } from "./image-services";
import { imageInputsSchema, isUnknown, type ImageInputs } from "./inputs";
import { forgetOwner, ownedId, recordOwner } from "./ownership";
import { stableOutputs } from "./stables";

// An image in an image service of kindling's configuration (Glance), made from a volume or a
// snapshot of a backend, an http(s) URL or a local file. Its data never changes (images are
// immutable): another source is another image. Its name, tags, properties, visibility and
// protection change in place, in one JSON patch. Refresh reads the image from the service: one deleted there leaves the
// state, one changed there shows the change as a diff the next `up` undoes.
//
// What the program manages is what it says: the properties it sets (the image also carries
// its source's, and may get others by hand, which are left alone), and tags, visibility and
// protection once it sets them.

export interface ImageOutputs extends ImageInputs {
  imageId: string;
  /** The service the image is in, named once (`service` may be left to the configuration's only one). */
  serviceName: string;
  status: string;
  sizeBytes?: number;
  checksum?: string;
  hashAlgo?: string;
  hashValue?: string;
  diskFormat?: string;
  createdAt: string;
}

const INPUT_KEYS = Object.keys(imageInputsSchema.shape);
const SOURCE_KEYS = ["volume", "snapshot", "url", "file"] as const;

/** Outputs that never change for an image (its data is immutable; see stables.ts); the id comes first. */
const STABLE_KEYS = ["imageId", "serviceName", "createdAt", "sizeBytes", "checksum", "hashAlgo", "hashValue", "diskFormat"] as const;

function outputs(inputs: ImageInputs, service: string, image: ImageRecord): ImageOutputs {
  return plain({
    ...inputs,
    imageId: image.id,
    serviceName: service,
    status: image.status,
    sizeBytes: image.sizeBytes,
    checksum: image.checksum,
    hashAlgo: image.hash?.algo,
    hashValue: image.hash?.value,
    diskFormat: image.diskFormat,
    createdAt: image.createdAt,
  });
}

/**
 * The resource an image was made for (project/stack/resource), set on the image itself: the
 * image service picks the id only when the image is made, so this is what finds an image that
 * an interrupted `up` (kill -9 mid-upload) left half made.
 */
const OWNER_PROPERTY = "kindling_pulumi_owner";

/**
 * Deletes the images an interrupted create of this resource left without data (queued, saving,
 * killed). An active one may be the image the state holds, which a replacement is made beside
 * (see diff): it is never touched here.
 */
async function removeLeftovers(service: ImageService, ownerKey: string | undefined): Promise<void> {
  if (!ownerKey) return;
  for (const image of await service.find({ properties: { [OWNER_PROPERTY]: ownerKey } })) {
    if (image.status !== "active") await service.delete(image.id);
  }
}

function backendOf(config: unknown): Promise<Backend> {
  return backendFor(config as BackendConfig);
}

function serviceNamed(name: string | undefined): ImageService {
  return imageServices().get(name, "service");
}

export async function check(olds: Partial<ImageInputs>, news: Record<string, unknown>) {
  const failures: CheckFailure[] = checkProperties(imageInputsSchema, news);
  const inputs = { ...news } as ImageInputs;
  inputs.name ??= olds.name ?? defaultName(inputs.resourceName, inputs.ownerKey);
  const failed = (key: string) => failures.some((f) => f.property === key);

  const sources = SOURCE_KEYS.filter((k) => inputs[k] !== undefined);
  if (sources.length === 0) {
    failures.push({ property: "volume", reason: "volume: give the image's source: one of volume, snapshot, url and file" });
  } else if (sources.length > 1) {
    failures.push({ property: sources[1], reason: `${sources[1]}: give one source of volume, snapshot, url and file, not ${sources.join(" and ")}` });
  }
  const source = sources.length === 1 ? sources[0] : undefined;
  if (source === "volume" || source === "snapshot") {
    for (const key of ["sha256", "sha512", "allowUnverified"] as const) {
      if (inputs[key] !== undefined) failures.push({ property: key, reason: `${key}: only for a url or file source (kindling hashes a ${source}'s bytes as it sends them)` });
    }
    if (inputs.backend === undefined && !failed("backend")) failures.push({ property: "backend", reason: `backend: is required with ${source} (the backend that holds it)` });
  }
  checkBackend(inputs.backend, failures);

  if (inputs.properties !== undefined && !isUnknown(inputs.properties) && !failed("properties")) {
    const reserved = Object.keys(inputs.properties).filter(isReservedField);
    if (reserved.length) failures.push({ property: "properties", reason: `properties.${reserved[0]}: is the image service's own field, not a property` });
    else if (OWNER_PROPERTY in inputs.properties) failures.push({ property: "properties", reason: `properties.${OWNER_PROPERTY}: is kindling's own (the resource the image was made for)` });
  }
  if (!isUnknown(inputs.service) && !failed("service")) {
    try {
      serviceNamed(inputs.service);
    } catch (err) {
      failures.push({ property: "service", reason: errorMessage(err) });
    }
  }
  if (!failures.length && inputs.backend !== undefined) {
    Object.assign(inputs, await stableOutputs(olds, inputs, STABLE_KEYS, async (opened) => {
      const id = await ownedId(opened, "image", inputs.ownerKey);
      if (!id) return undefined;
      const service = serviceNamed(inputs.service);
      return outputs(inputs, service.name, await service.show(id));
    }));
  }
  return { inputs, failures };
}

export async function diff(id: string, olds: ImageOutputs, news: ImageInputs) {
  // Another source (or other storage behind the same ids) is other data: another image.
  // A url or a file is compared as written: pin its digest for new bytes there to replace the image.
  const replaces = replacedBy(olds, news, [...SOURCE_KEYS, "sha256", "sha512"]);
  if (isUnknown(news.service) || (news.service !== undefined && news.service !== olds.serviceName)) replaces.push("service");
  const inPlace = changedIn(olds, news, ["name", "tags", "properties", "visibility", "protected", "backend", "allowUnverified"]);
  return {
    changes: replaces.length > 0 || inPlace,
    replaces,
    // The engine ignores this today; check carries these outputs instead (see stables.ts).
    stables: replaces.length ? [] : [...STABLE_KEYS],
    // Image names need not be unique: the new image is made before the old one goes.
    deleteBeforeReplace: false,
  };
}

export async function create(inputs: ImageInputs): Promise<{ id: string; outs: ImageOutputs }> {
  const service = serviceNamed(inputs.service);
  await removeLeftovers(service, inputs.ownerKey);
  const properties = { ...inputs.properties, ...(inputs.ownerKey ? { [OWNER_PROPERTY]: inputs.ownerKey } : {}) };
  const options: CopyToImageOptions = { name: inputs.name as string, visibility: inputs.visibility, protected: inputs.protected, tags: inputs.tags, properties };
  let made: UploadResult;
  let backend: Backend | undefined;
  if (inputs.volume !== undefined) {
    backend = await backendOf(inputs.backend);
    made = await (await backend.getVolume(inputs.volume)).copyToImage(service, options);
  } else if (inputs.snapshot !== undefined) {
    backend = await backendOf(inputs.backend);
    made = await (await backend.getSnapshot(inputs.snapshot)).copyToImage(service, options);
  } else {
    // Every digest checked as the bytes pass, the format taken from the content; a relative
    // file is the Pulumi project's.
    const field = inputs.url !== undefined ? "url" : "file";
    const ref = inputs.url ?? `file:${inputs.file}`;
    const source = await imageSourceFor(ref, imageServices(), { sha256: inputs.sha256, sha512: inputs.sha512 }, field);
    made = await copySourceToImage(source, service, { ...options, allowUnverified: inputs.allowUnverified });
  }
  // For preview: lets check find the image again (see stables.ts).
  if (backend) await recordOwner(backend, "image", inputs.ownerKey, made.image.id);
  return { id: made.image.id, outs: outputs(inputs, service.name, made.image) };
}

/** Statuses of an image on its way out: no longer there for the program. */
const GONE = new Set(["deleted", "pending_delete", "killed"]);

/** The image as the service holds it: deleted there, it leaves the state; changed, the change shows. */
export async function read(id: string, props: ImageOutputs) {
  const service = serviceNamed(props.serviceName ?? props.service);
  let image: ImageRecord;
  try {
    image = await service.show(id);
  } catch (err) {
    if (err instanceof NotFoundError) return {};
    throw err;
  }
  if (GONE.has(image.status)) return {};
  const managed: Partial<ImageInputs> = { name: image.name };
  if (props.tags !== undefined) managed.tags = sameSet(props.tags, image.tags) ? props.tags : image.tags;
  if (props.visibility !== undefined) managed.visibility = image.visibility;
  if (props.protected !== undefined) managed.protected = image.protected;
  if (props.properties !== undefined) {
    managed.properties = Object.fromEntries(Object.keys(props.properties).filter((k) => k in image.properties).map((k) => [k, image.properties[k]]));
  }
  const outs = outputs({ ...props, ...managed } as ImageInputs, service.name, image);
  const inputs = Object.fromEntries([...INPUT_KEYS, ...STABLE_KEYS].filter((k) => k in outs).map((k) => [k, outs[k as keyof ImageOutputs]]));
  return { id, props: plain(outs), inputs: plain(inputs) };
}

/** Name, tags, properties, visibility and protection, in one JSON patch; properties the program no longer sets are removed. */
export async function update(id: string, olds: ImageOutputs, news: ImageInputs) {
  const service = serviceNamed(olds.serviceName);
  const set: NonNullable<ImageUpdate["set"]> = {};
  const changes: ImageUpdate = { set };
  if (news.name !== undefined && news.name !== olds.name) set.name = news.name;
  if (news.visibility !== undefined && news.visibility !== olds.visibility) set.visibility = news.visibility;
  // Protection the program no longer asks for is taken off: an unprotected image is Glance's default.
  const protect = news.protected ?? (olds.protected === true ? false : undefined);
  if (protect !== undefined && protect !== olds.protected) set.protected = protect;
  const oldProps = olds.properties ?? {};
  const newProps = news.properties ?? {};
  const changedProps = Object.fromEntries(Object.entries(newProps).filter(([k, v]) => oldProps[k] !== v));
  if (Object.keys(changedProps).length) set.properties = changedProps;
  const removed = Object.keys(oldProps).filter((k) => !(k in newProps));
  if (removed.length) changes.remove = removed;
  // Tags the program stops setting are taken off too.
  const tags = news.tags ?? (olds.tags?.length ? [] : undefined);
  if (tags !== undefined && !sameSet(tags, olds.tags ?? [])) changes.tags = tags;
  const image = await service.update(id, changes);
  return { outs: outputs(news, service.name, image) };
}

/**
 * Deletes the image (one already gone is deleted). A protected image is refused, never
 * unprotected here: protection is the program's (or someone's) word that it must stay.
 */
export async function remove(id: string, props: ImageOutputs): Promise<void> {
  const service = serviceNamed(props.serviceName ?? props.service);
  try {
    await service.delete(id);
  } catch (err) {
    if (err instanceof ConflictError) {
      throw new ConflictError(`image ${id} in ${service.name} is protected, so it is not deleted`, {
        field: "protected",
        hint: "set protected: false on the Image and run `pulumi up` first, then delete it (kindling never unprotects an image on its own)",
      });
    }
    throw err;
  }
  if (props.backend !== undefined) await forgetOwner(await backendOf(props.backend), "image", props.ownerKey, id);
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return isDeepStrictEqual([...new Set(a)].sort(), [...new Set(b)].sort());
}
