import type { DriverVolume, Progress, VolumeDriver } from "../drivers/contract";
import { DigestCheck, type DigestAlgo } from "../images/digest";
import { prepareRawImage, writeRawImage } from "../images/to-volume";
import type { ImageSource, SourceDescription } from "../images/sources/source";
import type { CacheEntry } from "../images/cache/entry";
import { InvalidInputError } from "../util/errors";

// How the image cache fills its cached volume: the same pipeline as a volume made from an
// image without the cache (images/to-volume.ts: inspected before a byte is written, every
// digest the source offers checked at the end), with every digest the cache keys on computed
// on the way, each algorithm once. The one place that knows the pipeline's calls.

const KEPT: readonly DigestAlgo[] = ["sha256", "sha512", "md5"];

export type FillResult = { digests: CacheEntry["digests"]; format: string } | { refused: InvalidInputError };

/**
 * Creates `volume` through the driver (`onStart` says it exists, with its location) and
 * writes the source's bytes into it. Throws on any failure; the caller deletes the volume.
 * `refused`, before any volume is made, when the pipeline does not take the image.
 */
export async function fillFromImage(
  driver: VolumeDriver,
  volume: DriverVolume,
  source: ImageSource,
  description: SourceDescription,
  opts: { onStart: (location?: string) => void; onProgress: (p: Progress) => void },
): Promise<FillResult> {
  // The pipeline hashes what the source vouches for and sha256; the rest are hashed here.
  const pipelineHashes = new Set<DigestAlgo>([...description.expect.map((d) => d.algo), "sha256"]);
  const extra = new DigestCheck([], KEPT.filter((a) => !pipelineHashes.has(a)));
  // Described once already (the cache keyed on it): the same description, the bytes through `extra`.
  const hashed: ImageSource = {
    describe: async () => description,
    open: async (o) => (await source.open(o)).pipe(extra),
  };
  let prepared: Awaited<ReturnType<typeof prepareRawImage>>;
  try {
    prepared = await prepareRawImage(hashed, { allowUnverified: false, field: "image" });
  } catch (err) {
    // What this pipeline does not take (a format it does not convert) is left to the copy
    // without the cache, which may take it or refuses it in its own words.
    if (err instanceof InvalidInputError) return { refused: err };
    throw err;
  }
  try {
    const made = await driver.createVolume(volume);
    opts.onStart(made.location);
    const located = { ...volume, location: made.location ?? volume.location };
    const device = await driver.open({ kind: "volume", volume: located }, { readOnly: false });
    let written: Map<string, string>;
    try {
      written = (await writeRawImage(prepared, device, { onProgress: opts.onProgress })).digests;
    } finally {
      await device.close();
    }
    const digests: CacheEntry["digests"] = {};
    for (const algo of KEPT) digests[algo] = written.get(algo) ?? extra.digests().get(algo);
    return { digests, format: prepared.format };
  } finally {
    prepared.stream.destroy();
  }
}
