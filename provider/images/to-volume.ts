import { pipeline, type Readable } from "node:stream";
import type { BlockDevice, Progress } from "../drivers/contract";
import { InvalidInputError } from "../util/errors";
import { isAllZero } from "../util/zero";
import { firstBytes } from "./decompress";
import { DigestCheck, IntegrityError } from "./digest";
import { compressionOf } from "./inspect/compression";
import { ImageInspector } from "./inspect/inspector";
import { enforcePolicy } from "./inspect/policy";
import type { DetectedFormat, Inspection } from "./inspect/types";
import type { ImageSource, SourceDescription } from "./sources/source";

// A raw image into a volume, streamed: no temp file, no qemu-img. Before the volume exists the
// source is described (every digest it offers, its size) and its first MiB is inspected: only
// raw content (plain, partitioned or an iso) goes this way, anything else is refused before a
// byte is written. Then the bytes go straight into the volume's BlockDevice in large chunks,
// all-zero chunks skipped (a new volume reads as zeroes), every digest checked and the whole
// stream inspected again at its end (a VHD's footer, a polyglot): the caller deletes the
// volume when this throws.

/** What a volume may be written from this way: what qemu reads as raw. */
const RAW_FAMILY: readonly DetectedFormat[] = ["raw", "gpt", "mbr", "iso"];
const PREFIX = 1 << 20;
const CHUNK = 4 << 20;

export interface PreparedImage {
  description: SourceDescription;
  /** The image's bytes: what the volume must hold from byte 0. */
  sizeBytes: number;
  format: DetectedFormat;
  /** The source's stream, checked as it passes (digests), from its first byte. */
  readonly stream: Readable;
  readonly check: DigestCheck;
  readonly head: Buffer;
}

/**
 * Describes the source and looks at its first bytes: throws (naming `field`) when it offers no
 * digest and `allowUnverified` is not set, when its size is not known beforehand, when it is
 * compressed, or when it is not raw. Nothing is written yet.
 */
export async function prepareRawImage(source: ImageSource, opts: { allowUnverified?: boolean; field?: string }): Promise<PreparedImage> {
  const field = opts.field ?? "image";
  const description = await source.describe();
  if (!description.expect.length && !opts.allowUnverified) {
    throw new InvalidInputError(field, `${description.where} offers no digest to check its bytes against`, { hint: "give its sha256 or sha512 (--sha256), or allow an unverified image explicitly (--allow-unverified; allowUnverified in the library)" });
  }
  if (description.sizeBytes === undefined) throw new InvalidInputError(field, `${description.where} does not say its size before it is read, so a volume cannot be made for it yet`);
  const check = new DigestCheck(description.expect);
  // pipeline, not pipe: an error of the source (a cut transfer) while nobody reads yet must end
  // the checked stream with that error, not surface as an unhandled 'error' event.
  const stream = check;
  pipeline(await source.open(), check, () => undefined);
  const head = await firstBytes(stream, PREFIX);
  const compressed = compressionOf(head);
  if (compressed) throw new InvalidInputError(field, `${description.where} is ${compressed}-compressed; only raw images are copied to volumes so far`, { hint: "decompress it first" });
  const early = new ImageInspector();
  early.feed(head);
  const format = judge(early.finish(), description.declaredFormat, field, description.where).format;
  return { description, sizeBytes: description.sizeBytes, format, stream, check, head };
}

/** The policy for this path: exactly one format, of the raw family, the one declared, no failed check. */
function judge(inspection: Inspection, declared: string | undefined, field: string, where: string): Inspection {
  // One clear format that is not raw: say so plainly (a polyglot is left to the policy, which names it).
  if (!RAW_FAMILY.includes(inspection.format) && inspection.matches.length <= 1) {
    throw new InvalidInputError(field, `${where} is a ${inspection.format} image; only raw images are copied to volumes so far`, { hint: "convert it first (qemu-img convert -O raw)" });
  }
  return enforcePolicy(inspection, { declaredFormat: declared, allowedFormats: RAW_FAMILY });
}

/**
 * Writes the prepared image into `device` (a new volume at least as large), then checks the
 * byte count, every digest and the whole stream's inspection. Throws on any failure; the
 * caller deletes the volume then.
 */
export async function writeRawImage(prepared: PreparedImage, device: BlockDevice, opts: { onProgress?: (p: Progress) => void; field?: string } = {}): Promise<{ bytes: number; digests: Map<string, string> }> {
  const field = opts.field ?? "image";
  const { description, head, stream, check } = prepared;
  const inspector = new ImageInspector();
  let offset = 0;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const total = prepared.sizeBytes;
  const write = async () => {
    const chunk = pending.length === 1 ? pending[0] : Buffer.concat(pending);
    pending = [];
    pendingBytes = 0;
    if (offset + chunk.length > device.size) throw new InvalidInputError(field, `${description.where} holds more than the ${total} bytes it said it would`);
    if (!isAllZero(chunk)) await device.pwrite(chunk, offset);
    offset += chunk.length;
    opts.onProgress?.({ done: offset, total });
  };
  const take = async (chunk: Buffer) => {
    inspector.feed(chunk);
    pending.push(chunk);
    pendingBytes += chunk.length;
    if (pendingBytes >= CHUNK) await write();
  };
  await take(head);
  for await (const chunk of stream) await take(chunk as Buffer);
  if (pendingBytes) await write();
  await device.flush();
  if (offset !== total) throw new IntegrityError(`${description.where}: ${offset} bytes arrived, it said ${total}`);
  check.verify(description.where);
  judge(inspector.finish(), description.declaredFormat, field, description.where);
  return { bytes: offset, digests: check.digests() };
}
