import { imageSourceFor } from "../library/images";
import { parseImageRef } from "../images/sources/ref";
import type { ImageSource } from "../images/sources/source";
import type { ImageProvenance } from "../persistence/records";
import { errorMessage } from "../util/errors";
import type { CheckFailure } from "./check";
import { imageServices } from "./image-services";
import { isUnknown, type VolumeInputs } from "./inputs";
import { plain } from "./plain";

// A Volume's `image`: checked in check (the reference's form and its service, no network), the
// source it names at create, and what the outputs say of it from the volume's record.

/** Where a volume's bytes came from, as its outputs say: from its record (see images/provenance.ts). */
export interface ImageOrigin {
  /** The image's id in its service (none for a file or a URL). */
  imageId?: string;
  /** The image service's name in the configuration. */
  imageService?: string;
  /** The strongest digest the bytes were checked against, as `algo:hex` (none for an unverified image). */
  imageDigest?: string;
}

/** The outputs of a volume's image provenance; none for a volume not made from an image. */
export function originOf(image: ImageProvenance | undefined): ImageOrigin {
  if (!image) return {};
  const algo = ["sha512", "sha256", "md5"].find((a) => image.digests[a] !== undefined);
  return plain({ imageId: image.imageId, imageService: image.service, imageDigest: algo ? `${algo}:${image.digests[algo]}` : undefined });
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

/** The source `inputs.image` names, with the program's digests to check besides the source's. */
export function volumeImageSource(inputs: VolumeInputs): Promise<ImageSource> {
  return imageSourceFor(inputs.image as string, imageServices(), { sha256: inputs.imageSha256, sha512: inputs.imageSha512 }, "image");
}
