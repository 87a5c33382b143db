import type { Readable } from "node:stream";
import { z } from "zod";
import type { Progress } from "../drivers/contract";
import { conflicting, hexDigest, type Digest, type DigestAlgo } from "../images/digest";
import type { ImageSource, SourceDescription } from "../images/sources/source";
import { ConflictError, InvalidInputError } from "../util/errors";
import { parseInput } from "../util/validate";
import { ImageServiceSet, imageSourceFor, type GivenDigests } from "./images";
import type { CreateVolumeFromImageOptions } from "./schemas";

// `backend.createVolume({ image, imageDigests?, allowUnverified?, ... })`: the library's way to
// say "a volume from this image", beside createVolumeFromImage(source, ...). The image is a
// reference as users write it (`file:PATH`, an http(s) URL, `SERVICE:NAME_OR_ID` of the image
// services the caller passes) or an ImageSource the caller built; the digests given here are
// checked besides every one the source offers.

export interface CreateVolumeWithImageOptions extends CreateVolumeFromImageOptions {
  image: string | ImageSource;
  /** The caller's digests of the image's bytes (hex), checked besides the source's own. */
  imageDigests?: GivenDigests;
}

/** Per call, beside the options: progress, where to stage, and which image services `SERVICE:` names. */
export interface CreateFromImageCallOptions {
  onProgress?: (p: Progress) => void;
  /** Where non-raw and compressed images are staged (images/staging.ts has the default). */
  stagingDir?: string;
  /** The services a `SERVICE:NAME_OR_ID` reference is looked up in (openImageServices). */
  imageServices?: ImageServiceSet;
  /** Stops the copy: the volume is deleted, the staging file removed, an InterruptedError thrown. */
  signal?: AbortSignal;
}

const digestsSchema = z.strictObject({ sha256: z.string().optional(), sha512: z.string().optional(), md5: z.string().optional() });

/** The source `image` names, with `digests` added to what it vouches for. */
export async function imageSourceOf(image: unknown, digests: unknown, services?: ImageServiceSet): Promise<ImageSource> {
  const given = parseInput(digestsSchema, digests ?? {}, "imageDigests");
  if (typeof image === "string") return imageSourceFor(image, services ?? new ImageServiceSet(new Map()), given, "image");
  if (!isImageSource(image)) throw new InvalidInputError("image", "must be an image reference (file:PATH, an http(s) URL, SERVICE:NAME_OR_ID) or an ImageSource");
  const extra = Object.entries(given)
    .filter(([, v]) => v !== undefined)
    .map(([algo, v]) => hexDigest(algo as DigestAlgo, v as string, `imageDigests.${algo}`, `imageDigests.${algo}`));
  return extra.length ? new AlsoVouched(image, extra) : image;
}

function isImageSource(value: unknown): value is ImageSource {
  return typeof value === "object" && value !== null && typeof (value as ImageSource).describe === "function" && typeof (value as ImageSource).open === "function";
}

/** A source with the caller's digests added; two that disagree on one algorithm are a conflict. */
class AlsoVouched implements ImageSource {
  constructor(
    private readonly inner: ImageSource,
    private readonly extra: Digest[],
  ) {}

  async describe(): Promise<SourceDescription> {
    const d = await this.inner.describe();
    const expect = [...this.extra, ...d.expect];
    const clash = conflicting(expect);
    if (clash) throw new ConflictError(`${d.where}: ${clash[0].from} says its ${clash[0].algo} is ${clash[0].value}, ${clash[1].from} says ${clash[1].value}`, { field: "imageDigests" });
    return { ...d, expect };
  }

  open(opts?: { offset?: number; signal?: AbortSignal }): Promise<Readable> {
    return this.inner.open(opts);
  }
}
