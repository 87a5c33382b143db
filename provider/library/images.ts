import { isAbsolute, resolve } from "node:path";
import { z } from "zod";
import type { BlockDevice, Progress } from "../drivers/contract";
import type { ImageRecord, ImageService, UploadResult } from "../images/contract";
import { deviceStream } from "../images/device-stream";
import { carriedProperties, uploadNewImage } from "../images/to-image";
import { sourceToImage } from "../images/source-to-image";
import { glanceImageService } from "../images/glance";
import { hexDigest, type Digest, type DigestAlgo } from "../images/digest";
import { FileSource } from "../images/sources/file";
import { GlanceSource } from "../images/sources/glance";
import { HttpSource } from "../images/sources/http";
import { parseImageRef, RESERVED_SERVICE_NAMES } from "../images/sources/ref";
import type { ImageSource } from "../images/sources/source";
import { ConflictError, InvalidInputError, NotFoundError } from "../util/errors";
import { metadataSchema } from "../util/names";
import { parseInput } from "../util/validate";
import type { LoadedConfig } from "./config";

// The image services a configuration names (`imageServices`, beside the backends), and how a
// user's words pick an image in one of them: `SERVICE:NAME_OR_ID`, or just NAME_OR_ID when
// there is one service. A name matches the most recently created image of that name.

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class ImageServiceSet {
  constructor(readonly services: Map<string, ImageService>) {}

  names(): string[] {
    return [...this.services.keys()];
  }

  /** A service by name; without a name, the only one (or an error listing the choices). */
  get(name?: string, field = "service"): ImageService {
    if (name === undefined) {
      if (this.services.size === 1) return [...this.services.values()][0];
      if (this.services.size === 0) throw new InvalidInputError(field, "the configuration names no image service", { hint: 'add one under "imageServices", e.g. { "glance": { "type": "glance", "endpoint": ..., "auth": ... } }' });
      throw new InvalidInputError(field, `the configuration has ${this.services.size} image services (${this.names().join(", ")}); name one`);
    }
    const service = this.services.get(name);
    if (!service) throw new InvalidInputError(field, `no image service named ${JSON.stringify(name)}; configured: ${this.names().join(", ") || "none"}`);
    return service;
  }

  /**
   * The image `ref` names: `SERVICE:NAME_OR_ID` or NAME_OR_ID. `unique`: a name that several
   * images carry is an error listing them (for what cannot be undone, such as a delete)
   * instead of the most recent one.
   */
  async resolve(ref: string, opts: { unique?: boolean; field?: string } = {}): Promise<{ service: ImageService; image: ImageRecord }> {
    const field = opts.field ?? "image";
    const colon = ref.indexOf(":");
    const named = colon > 0 && this.services.has(ref.slice(0, colon));
    const service = this.get(named ? ref.slice(0, colon) : undefined, field);
    const key = named ? ref.slice(colon + 1) : ref;
    if (!key) throw new InvalidInputError(field, "needs an image name or id");
    if (UUID.test(key)) {
      try {
        return { service, image: await service.show(key.toLowerCase()) };
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
        // An image may be named like an id: look for the name before saying there is none.
      }
    }
    const found = await service.find({ name: key });
    if (found.length === 0) throw new NotFoundError("image", key, { field, hint: `not in image service ${service.name}` });
    if (opts.unique && found.length > 1) {
      throw new ConflictError(`${found.length} images in ${service.name} are named ${JSON.stringify(key)}: ${found.map((i) => i.id).join(", ")}`, { field, hint: "name one by its id" });
    }
    return { service, image: found[0] };
  }

  close(): void {
    for (const s of this.services.values()) s.close();
  }
}

/** Builds the configuration's image services; an entry in error names its field, and nothing is opened. */
export function openImageServices(loaded: LoadedConfig): ImageServiceSet {
  const entries = Object.entries(loaded.config.imageServices ?? {});
  const services = new Map<string, ImageService>();
  for (const [name, entry] of entries) {
    const prefix = `imageServices.${name}`;
    if (RESERVED_SERVICE_NAMES.has(name)) throw new InvalidInputError(prefix, `${JSON.stringify(name)} is how image references begin (file:, http:, https:); name the service otherwise`);
    if (entry.type !== "glance") throw new InvalidInputError(`${prefix}.type`, `must be "glance" (the one image service kindling speaks), not ${JSON.stringify(entry.type)}`);
    // Files the entry names are relative to the configuration file, as a backend's are.
    const here = (p: unknown) => (typeof p === "string" && !isAbsolute(p) ? resolve(loaded.baseDir, p) : p);
    const auth = entry.auth as Record<string, unknown> | undefined;
    const withPaths = { ...entry, ...(entry.ca !== undefined ? { ca: here(entry.ca) } : {}), ...(auth?.tokenFile !== undefined ? { auth: { ...auth, tokenFile: here(auth.tokenFile) } } : {}) };
    services.set(name, glanceImageService(name, withPaths, prefix));
  }
  return new ImageServiceSet(services);
}

/** What a user may say of an image made from a volume or a snapshot. */
export const copyToImageSchema = z.strictObject({
  name: z.string().min(1, "must not be empty").max(255, "must be at most 255 characters"),
  visibility: z.enum(["private", "shared", "community", "public"]).optional(),
  protected: z.boolean().optional(),
  tags: z.array(z.string().min(1).max(255)).max(64).optional(),
  /** Added to what the source carries (its metadata, without Glance's reserved names). */
  properties: metadataSchema.optional(),
});

export type CopyToImageOptions = z.input<typeof copyToImageSchema>;

/**
 * A new raw image in `service` holding what `device` holds, streamed (no temp file). The
 * image is checked after the upload (size and hashes of what was sent) and deleted on any
 * failure, so there is a whole image or none.
 */
export async function copyDeviceToImage(
  device: BlockDevice,
  service: ImageService,
  options: CopyToImageOptions,
  source: { what: string; sizeGiB: number; properties: Record<string, string> },
  onProgress?: (p: Progress) => void,
): Promise<UploadResult> {
  const o = parseInput(copyToImageSchema, options);
  const body = deviceStream(device, { onProgress, what: source.what });
  return uploadNewImage(service, {
    name: o.name, diskFormat: "raw", containerFormat: "bare", minDiskGiB: source.sizeGiB, visibility: o.visibility, protected: o.protected, tags: o.tags,
    properties: { ...carriedProperties(source.properties), ...o.properties },
  }, body, { sizeBytes: device.size });
}

/** What a user may say of an image made from a URL, a file or another service's image. */
export const copySourceToImageSchema = copyToImageSchema.extend({
  /** A claim of the format, checked against the content (which decides it when this is left out). */
  diskFormat: z.enum(["raw", "iso", "qcow2", "vmdk", "vhd", "vhdx", "vdi"]).optional(),
  /** A source that offers no digest (and none was given) is refused unless this is set. */
  allowUnverified: z.boolean().optional(),
  /** Glance's min_disk; by default the image's virtual size, rounded up to whole GiB. */
  minDiskGiB: z.number().int().min(0).optional(),
  /** Where a non-raw image is staged to be checked; the system's temp dir by default. */
  stagingDir: z.string().min(1).optional(),
});

export type CopySourceToImageOptions = z.input<typeof copySourceToImageSchema>;

/**
 * A new image in `service` made from `source` (see `imageSourceFor`): every digest the source
 * offers checked, its format taken from the content and judged by the inspector's policy (a
 * claimed `diskFormat` that disagrees is refused), raw content streamed, anything else staged
 * and checked before the image is made. A failure leaves no image.
 */
export async function copySourceToImage(source: ImageSource, service: ImageService, options: CopySourceToImageOptions, onProgress?: (p: Progress) => void): Promise<UploadResult> {
  const o = parseInput(copySourceToImageSchema, options);
  return sourceToImage(source, service, {
    image: { name: o.name, visibility: o.visibility, protected: o.protected, tags: o.tags, minDiskGiB: o.minDiskGiB, properties: o.properties ? carriedProperties(o.properties) : undefined },
    diskFormat: o.diskFormat, allowUnverified: o.allowUnverified, stagingDir: o.stagingDir, onProgress,
  });
}

/** The user's digests of an image, by flag (`--sha256`, `--sha512`, `--md5`). */
export type GivenDigests = Partial<Record<"sha256" | "sha512" | "md5", string>>;

/**
 * The source an image reference names (`SERVICE:NAME_OR_ID`, `file:PATH`, an http(s) URL),
 * with the user's digests to check besides any the source offers.
 */
export async function imageSourceFor(ref: string, services: ImageServiceSet, given: GivenDigests = {}, field = "image"): Promise<ImageSource> {
  const digests: Digest[] = Object.entries(given).filter(([, v]) => v !== undefined).map(([algo, v]) => hexDigest(algo as DigestAlgo, v as string, `--${algo}`, algo));
  const parsed = parseImageRef(ref, services.names(), field);
  if (parsed.kind === "file") return new FileSource(parsed.path, digests, field);
  if (parsed.kind === "url") return new HttpSource({ url: parsed.url, expect: digests, field });
  const { service, image } = await services.resolve(`${parsed.service}:${parsed.image}`, { field });
  return new GlanceSource(service, image, digests, field);
}
