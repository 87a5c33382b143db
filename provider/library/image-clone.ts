import type { DriverVolume } from "../drivers/contract";
import { provenanceOf } from "../images/provenance";
import type { ImageSource, SourceDescription } from "../images/sources/source";
import { verifyClonedImage } from "../images/verify-clone";
import type { ImageProvenance } from "../persistence/records";
import { InterruptedError, InvalidInputError } from "../util/errors";
import { newId } from "../util/ids";
import { logger } from "../util/log";
import { parseInput } from "../util/validate";
import { GiB } from "../util/sizes";
import type { Backend } from "./backend";
import type { CreateFromImageCallOptions } from "./image-volume";
import { createVolumeSchema, type CreateVolumeFromImageOptions } from "./schemas";
import { Volume } from "./volume";

// The fast path of backend.createVolumeFromImage (Cinder's clone_image): an image the service
// keeps where the backend's driver can clone it (Glance's rbd store in the backend's own Ceph
// cluster) becomes a copy-on-write clone of it instead of a download. Only raw images, declared
// raw in a bare container, of a stated size: a clone cannot convert. The clone is then read back
// through every digest the service vouches for and through the inspector, as a copied raw image
// is: kindling verifies every byte it hands out, and a clone costs one read of the image for it
// (no write, no space). A clone that fails is deleted; nothing else was made.

/** The driver passed on a location: the record made for it goes, and the next one is tried. */
class NotCloneable extends Error {}

/** Why an image is not one to clone, or undefined when it is. */
function notCloneable(d: SourceDescription): string | undefined {
  if (!d.locations?.length) return "the service shows no location";
  if (d.declaredFormat !== "raw") return `disk_format ${d.declaredFormat ?? "unset"}, not raw`;
  if ((d.origin.containerFormat ?? "bare") !== "bare") return `container_format ${d.origin.containerFormat}, not bare`;
  if (!d.sizeBytes) return "no size stated";
  return undefined;
}

/**
 * The new volume as a verified clone of where the image service keeps the image, or undefined
 * when the driver cannot clone it (no such driver method, not raw, another cluster, no
 * location): the caller copies the image then. Refuses (throws, nothing left) a size below
 * what the image needs, a source nobody vouches for unless `allowUnverified`, and a clone whose
 * bytes are not the image's or not raw.
 */
export async function cloneImageFromLocation(backend: Backend, source: ImageSource, options: CreateVolumeFromImageOptions, opts: CreateFromImageCallOptions = {}): Promise<Volume | undefined> {
  const driver = backend.driver;
  if (!driver.cloneFromLocation) return undefined;
  const { allowUnverified, sizeGiB, ...rest } = options;
  // Every other field is checked before the source is asked anything, as on the copy path.
  parseInput(createVolumeSchema, { ...rest, sizeGiB: sizeGiB ?? 1 });
  // Only an image service shows where it keeps the bytes: a URL or a file is not asked twice.
  const origin = source.origin?.();
  if (origin && origin.kind !== "glance") return undefined;
  const description = await source.describe();
  const why = notCloneable(description);
  if (why) {
    logger().debug({ image: description.where, why }, "the image is copied, not cloned");
    return undefined;
  }
  // The copy path says why an unverified source is refused: one message for both.
  if (!description.expect.length && !allowUnverified) return undefined;
  const bytes = description.sizeBytes as number;
  const minDisk = description.minDiskGiB ?? 0;
  const needed = Math.max(1, Math.ceil(bytes / GiB), minDisk);
  if (sizeGiB !== undefined && sizeGiB < needed) {
    throw new InvalidInputError("sizeGiB", `the image needs at least ${needed} GiB (${bytes} bytes${minDisk ? `, min_disk ${minDisk} GiB` : ""}), more than ${sizeGiB}`);
  }
  const input = parseInput(createVolumeSchema, { ...rest, sizeGiB: sizeGiB ?? needed });
  // One id for every location tried: a location the driver passes on leaves no record behind.
  const id = input.id ?? newId();
  for (const location of description.locations as string[]) {
    // What the record says of the image; the checks below complete it before the volume is available.
    const image: ImageProvenance = { ...provenanceOf(description, { format: "raw", sizeBytes: bytes, virtualSizeBytes: bytes }), clonedFrom: location };
    const record = await backend.newVolumeRecord({ ...input, id }, { image });
    const progress = backend.progressFor("create", id, opts.onProgress);
    try {
      const volume = await Volume.build(backend, record, async (v) => {
        const update = await driver.cloneFromLocation?.(v, location, progress);
        if (!update) throw new NotCloneable();
        const made: DriverVolume = { ...v, location: update.location ?? v.location };
        try {
          const verified = await verifyAndDescribe(backend, made, description, opts);
          // The record's provenance object is the one written when the volume becomes
          // available: what the checks found goes into it now.
          image.detectedFormat = verified.format;
          image.digests = { ...image.digests, ...verified.digests };
        } catch (err) {
          await driver.deleteVolume(made).catch((cleanup: Error) => logger().warn({ volume: id, err: cleanup.message }, "could not delete a clone that failed its checks"));
          throw err;
        }
        return update;
      });
      logger().info({ event: "image.clone", backend: backend.name, volume: volume.id, location }, "a volume cloned from where the image service keeps the image");
      return volume;
    } catch (err) {
      if (err instanceof NotCloneable) continue;
      if (opts.signal?.aborted) throw new InterruptedError(`the clone of ${description.where} into volume ${input.name ?? id} was interrupted; nothing was kept`);
      throw err;
    }
  }
  return undefined;
}

/** Reads the clone back through the image's digests and the inspector (verify-clone.ts). */
async function verifyAndDescribe(backend: Backend, made: DriverVolume, description: SourceDescription, opts: CreateFromImageCallOptions): Promise<{ format: string; digests: Record<string, string> }> {
  const device = await backend.driver.open({ kind: "volume", volume: made }, { readOnly: true });
  try {
    const verified = await verifyClonedImage(device, description, { signal: opts.signal });
    return { format: verified.inspection.format, digests: Object.fromEntries(verified.digests) };
  } finally {
    await device.close();
  }
}
