import type { BlockDevice, Progress } from "../drivers/contract";
import { InvalidInputError } from "../util/errors";
import { DigestCheck, IntegrityError } from "./digest";
import { ImageInspector, isPolyglot } from "./inspect/inspector";
import { enforcePolicy } from "./inspect/policy";
import type { Inspection } from "./inspect/types";
import type { SourceDescription } from "./sources/source";
import { RAW_FAMILY } from "./to-volume";

// A volume made by cloning where the image service keeps an image (an rbd clone of Glance's
// snapshot) was never copied, so no byte of it passed kindling's checks on the way in. It is
// read back instead: the image's bytes, from the clone, through every digest the source vouches
// for and through the inspector, as a copied raw image would be. That costs one read of the
// image (no write, no space); a clone that fails is the caller's to delete.

const CHUNK = 8 << 20;
/** Reads in flight ahead of the hashing: enough to keep librbd busy while the CPU hashes. */
const READ_AHEAD = 3;

export interface VerifiedClone {
  inspection: Inspection;
  /** What the image's bytes hashed to (each vouched-for algorithm). */
  digests: Map<string, string>;
}

/**
 * Reads the first `description.sizeBytes` of `device` (the clone), checks every digest in
 * `description.expect` and inspects the whole: raw content only (plain, partitioned, an iso),
 * the declared format, no polyglot. Throws IntegrityError or InvalidInputError naming `field`.
 */
export async function verifyClonedImage(device: BlockDevice, description: SourceDescription, opts: { field?: string; signal?: AbortSignal; onProgress?: (p: Progress) => void } = {}): Promise<VerifiedClone> {
  const field = opts.field ?? "image";
  const total = description.sizeBytes;
  if (total === undefined || total <= 0) throw new InvalidInputError(field, `${description.where} says nothing of its size: a clone of it cannot be checked`);
  if (device.size < total) throw new IntegrityError(`${description.where}: the clone holds ${device.size} bytes, fewer than the image's ${total}`);
  // Only what someone vouches for: another hash nobody checks would cost CPU on every clone.
  const check = new DigestCheck(description.expect, []);
  // Nobody reads the check's output: it is a hash here, not a pipe.
  check.resume();
  const inspector = new ImageInspector();
  const reads: Promise<Buffer>[] = [];
  let next = 0;
  const queue = () => {
    while (reads.length < READ_AHEAD && next < total) {
      const buffer = Buffer.allocUnsafe(Math.min(CHUNK, total - next));
      const read = device.pread(buffer, next).then(() => buffer);
      read.catch(() => undefined); // seen when its turn comes
      reads.push(read);
      next += buffer.length;
    }
  };
  let done = 0;
  try {
    queue();
    while (reads.length) {
      opts.signal?.throwIfAborted();
      const chunk = await (reads.shift() as Promise<Buffer>);
      queue();
      inspector.feed(chunk);
      if (!check.write(chunk)) await new Promise((resolve) => check.once("drain", resolve));
      done += chunk.length;
      opts.onProgress?.({ done, total });
    }
  } finally {
    await Promise.allSettled(reads);
  }
  await new Promise<void>((resolve, reject) => {
    check.once("error", reject);
    check.end(resolve);
  });
  check.verify(`${description.where} (its clone)`);
  const inspection = inspector.finish();
  if (!RAW_FAMILY.includes(inspection.format) || isPolyglot(inspection.matches)) {
    throw new InvalidInputError(field, `${description.where} is declared raw, but its bytes are a ${inspection.format} image${isPolyglot(inspection.matches) ? ` (and ${inspection.matches.join(", ")})` : ""}: a clone of it is refused, nothing was kept`, {
      hint: "raw images only are cloned; fix the image's disk_format in the image service",
    });
  }
  enforcePolicy(inspection, { declaredFormat: description.declaredFormat, allowedFormats: RAW_FAMILY });
  return { inspection, digests: check.digests() };
}
