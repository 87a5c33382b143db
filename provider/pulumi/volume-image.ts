import { imageSourceFor } from "../library/images";
import { parseImageRef } from "../images/sources/ref";
import type { ImageSource } from "../images/sources/source";
import { errorMessage } from "../util/errors";
import type { CheckFailure } from "./check";
import { imageServices } from "./image-services";
import { isUnknown, type VolumeInputs } from "./inputs";

// A Volume's `image`: checked in check (the reference's form and its service, no network), and
// at create the source it names, with where the bytes came from for the outputs.

/** Where a volume's bytes came from, as its outputs record it. */
export interface ImageOrigin {
  /** The image's id in its service (none for a file or a URL). */
  imageId?: string;
  /** The image service's name in the configuration. */
  imageService?: string;
  /** The strongest digest the bytes were checked against, as `algo:hex` (none for an unverified image). */
  imageDigest?: string;
}

export const ORIGIN_KEYS = ["imageId", "imageService", "imageDigest"] as const;

/** The origin outputs `props` carries (a volume's outputs), to keep them across updates and refreshes. */
export function originOf(props: object): ImageOrigin {
  const p = props as Record<string, unknown>;
  return Object.fromEntries(ORIGIN_KEYS.filter((k) => typeof p[k] === "string").map((k) => [k, p[k]]));
}

export function checkImage(inputs: Partial<VolumeInputs>, failures: CheckFailure[]): void {
  const given = (v: unknown) => v !== undefined;
  if (inputs.image === undefined) {
    for (const key of ["imageSha256", "imageSha512", "allowUnverifiedImage"] as const) {
      if (given(inputs[key])) failures.push({ property: key, reason: `${key}: only with image` });
    }
    return;
  }
  const other = (["snapshotId", "sourceVolumeId", "adopt"] as const).filter((k) => given(inputs[k]));
  if (other.length) failures.push({ property: "image", reason: `image: give one of image, snapshotId, sourceVolumeId and adopt, not image and ${other.join(" and ")}` });
  if (isUnknown(inputs.image) || failures.some((f) => f.property === "image")) return;
  try {
    parseImageRef(inputs.image, imageServices().names(), "image");
  } catch (err) {
    failures.push({ property: "image", reason: errorMessage(err) });
  }
}

/** The source `inputs.image` names, with the image's id pinned (a name matches the newest image of that name now). */
export async function volumeImageSource(inputs: VolumeInputs): Promise<{ source: ImageSource; origin: ImageOrigin }> {
  const services = imageServices();
  const ref = inputs.image as string;
  const digests = { sha256: inputs.imageSha256, sha512: inputs.imageSha512 };
  const parsed = parseImageRef(ref, services.names(), "image");
  let origin: ImageOrigin = {};
  let pinned = ref;
  if (parsed.kind === "service") {
    const { service, image } = await services.resolve(ref, { field: "image" });
    origin = { imageId: image.id, imageService: service.name };
    pinned = `${service.name}:${image.id}`;
  }
  const source = await imageSourceFor(pinned, services, digests, "image");
  const strongest = [...(await source.describe()).expect].sort((a, b) => rank(b.algo) - rank(a.algo))[0];
  if (strongest) origin.imageDigest = `${strongest.algo}:${strongest.value}`;
  return { source, origin };
}

const rank = (algo: string) => (algo === "sha512" ? 3 : algo === "sha256" ? 2 : 1);
