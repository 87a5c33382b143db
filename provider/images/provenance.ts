import type { ImageProvenance } from "../persistence/records";
import { now } from "../util/ids";
import type { SourceDescription } from "./sources/source";

// What a volume made from an image records of it: who offered the image (service, id, name,
// or the URL or file), what it was said to be and what kindling found, and every digest its
// bytes were checked against. The record is written when the volume is created; a copy that
// fails any of those checks deletes the volume, so a record that survives was verified.

export function provenanceOf(description: SourceDescription, found: { format: string; virtualSizeBytes: number; sizeBytes: number }): ImageProvenance {
  const o = description.origin;
  const digests: Record<string, string> = {};
  for (const d of description.expect) digests[d.algo] = d.value;
  return {
    kind: o.kind,
    ...(o.service !== undefined ? { service: o.service } : {}),
    ...(o.imageId !== undefined ? { imageId: o.imageId } : {}),
    ...(o.imageName !== undefined ? { imageName: o.imageName } : {}),
    ...(o.location !== undefined ? { location: o.location } : {}),
    ...(description.declaredFormat !== undefined ? { declaredFormat: description.declaredFormat } : {}),
    ...(o.containerFormat !== undefined ? { containerFormat: o.containerFormat } : {}),
    detectedFormat: found.format,
    sizeBytes: found.sizeBytes,
    virtualSizeBytes: found.virtualSizeBytes,
    ...(description.minDiskGiB ? { minDiskGiB: description.minDiskGiB } : {}),
    ...(o.minRamMiB ? { minRamMiB: o.minRamMiB } : {}),
    digests,
    properties: { ...(o.properties ?? {}) },
    copiedAt: now(),
  };
}
