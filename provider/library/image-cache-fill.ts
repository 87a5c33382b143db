import type { DriverVolume, Progress, VolumeDriver } from "../drivers/contract";
import type { DigestAlgo } from "../images/digest";
import { convertStagedImage, prepareImage, writeRawImage } from "../images/to-volume";
import type { ImageSource, SourceDescription } from "../images/sources/source";
import type { CacheEntry } from "../images/cache/entry";
import { GiB } from "../util/sizes";

// How the image cache fills its cached volume: the same pipeline as a volume made from an
// image without the cache (images/to-volume.ts: inspected before a byte is written, every
// digest the source offers checked at the end), with every digest the cache keys on computed
// on the way, each algorithm once. The one place that knows the pipeline's calls.

const KEPT: readonly DigestAlgo[] = ["sha256", "sha512", "md5"];

/** `sizeBytes`: what the cached volume holds from byte 0 (an image's virtual size); `sizeGiB`: the volume's size. */
export interface FillResult { digests: CacheEntry["digests"]; format: string; sizeBytes: number; sizeGiB: number }

/**
 * Creates `volume` through the driver (`onStart` says it exists, with its location and size:
 * an image that is converted may need more than its bytes) and writes the image into it, raw
 * content streamed, anything else staged, checked and converted (images/to-volume.ts). Throws
 * on any failure, a refused image too (before any volume is made: every format the pipeline
 * knows is taken, so a refusal is final and the copy without the cache need not download the
 * image again to refuse it); the caller deletes the volume.
 */
export async function fillFromImage(
  driver: VolumeDriver,
  volume: DriverVolume,
  source: ImageSource,
  description: SourceDescription,
  opts: { onStart: (location: string | undefined, sizeGiB: number) => void; onProgress: (p: Progress) => void },
): Promise<FillResult> {
  // Described once already (the cache keyed on it): the same description, every kept digest computed on the way.
  const described: ImageSource = { describe: async () => description, open: (o) => source.open(o) };
  const prepared = await prepareImage(described, { allowUnverified: false, field: "image", maxImageBytes: (await driver.maxSizeGiB(volume.pool)) * GiB, alsoDigests: [...KEPT] });
  try {
    // A converted image's disk (its virtual size) may be larger than its bytes said.
    const sized = { ...volume, sizeGiB: Math.max(volume.sizeGiB, Math.ceil(prepared.virtualSize / GiB)) };
    const made = await driver.createVolume(sized);
    opts.onStart(made.location, sized.sizeGiB);
    const located = { ...sized, location: made.location ?? sized.location };
    let written: Map<string, string>;
    if (prepared.kind === "stream") {
      const device = await driver.open({ kind: "volume", volume: located }, { readOnly: false });
      try {
        written = (await writeRawImage(prepared, device, { onProgress: opts.onProgress })).digests;
      } finally {
        await device.close();
      }
    } else {
      await convertStagedImage(prepared, driver, located, { onProgress: opts.onProgress });
      written = prepared.digests;
    }
    const digests: CacheEntry["digests"] = {};
    for (const algo of KEPT) digests[algo] = written.get(algo);
    const format = prepared.kind === "stream" ? prepared.format : prepared.checked.inspection.format;
    return { digests, format, sizeBytes: prepared.virtualSize, sizeGiB: sized.sizeGiB };
  } finally {
    prepared.close();
  }
}
