import { open as openFile } from "node:fs/promises";
import { Readable } from "node:stream";
import type { BlockDevice, DriverVolume, Progress, VolumeDriver } from "../drivers/contract";
import { InvalidInputError, NoSpaceError, isErrno } from "../util/errors";
import { isAllZero } from "../util/zero";
import { decompressed, firstBytes } from "./decompress";
import { DigestCheck, IntegrityError, type DigestAlgo } from "./digest";
import { checkImageFile, type CheckedImage } from "./inspect/check";
import { compressionOf, type Compression } from "./inspect/compression";
import { ImageInspector, TAIL_BYTES, isPolyglot } from "./inspect/inspector";
import { enforcePolicy } from "./inspect/policy";
import type { DetectedFormat, Inspection } from "./inspect/types";
import { qemuImgConvert } from "./qemu-convert";
import { qemuEndpoint } from "./qemu-endpoint";
import { newStagingFile, type StagingFile } from "./staging";
import type { ImageSource, SourceDescription } from "./sources/source";

// An image into a new volume, in one of two ways, chosen from the image's first MiB (and, where
// the source can seek, its last 4 KiB: a fixed VHD is raw data with a footer at the end):
//
// - Raw content (plain, partitioned or an iso), uncompressed, of a size the source states: streamed
//   straight into the volume's BlockDevice in large chunks, all-zero chunks skipped (a new
//   volume reads as zeroes): no temp file, no qemu-img. Every digest is checked and the whole
//   stream inspected again at its end; the caller deletes the volume when that fails.
// - Anything else (qcow2, vmdk, vhd, vhdx, vdi, and every compressed image, raw ones too):
//   staged once into a private file, decompressed on the way (by content), its digests checked
//   as it arrives; then checkImageFile (the inspector and the policy, then qemu-img info under
//   limits, cross-checked) before qemu-img sees it; then converted straight into the volume.
//   A compressed raw image is staged rather than streamed: its size is known only once it has
//   been inflated, so staging is what lets the volume's size default to the image's, and what
//   lets every digest and the whole inspection pass before any volume exists.
//
// Either way the volume's size is known before it is made, and nothing is created for an image
// that is refused.

/** What a volume may be written from directly: what qemu reads as raw. */
export const RAW_FAMILY: readonly DetectedFormat[] = ["raw", "gpt", "mbr", "iso"];
const PREFIX = 1 << 20;
const CHUNK = 4 << 20;
/** Staged bytes are written in chunks of this size, all-zero ones left as holes. */
/** Pieces at least this large are written as they come, smaller ones gathered. */
const SMALL_PIECE = 256 << 10;
const STAGE_CHUNK = 1 << 20;

interface PreparedBase {
  description: SourceDescription;
  /** The disk's size in bytes: what the volume must hold from byte 0. */
  virtualSize: number;
  /** Ends the source's stream and removes the staging file; safe to call more than once. */
  close(): void;
}

/** Raw content to stream into the volume (writeRawImage). */
export interface StreamedImage extends PreparedBase {
  kind: "stream";
  format: DetectedFormat;
  /** The source's stream, checked as it passes (digests), past `head`. */
  readonly stream: Readable;
  readonly check: DigestCheck;
  readonly head: Buffer;
}

/** A staged, checked image to convert into the volume (convertStagedImage). */
export interface StagedImage extends PreparedBase {
  kind: "staged";
  checked: CheckedImage;
  compression?: Compression;
  /** What the source's bytes hashed to (verified against every digest it offers). */
  digests: Map<string, string>;
  readonly staging: StagingFile;
}

export type PreparedImage = StreamedImage | StagedImage;

export interface PrepareOptions {
  allowUnverified?: boolean;
  /** The input field errors about the image name. */
  field?: string;
  /** Where images are staged (see staging.ts); the default staging area otherwise. */
  stagingDir?: string;
  /**
   * The largest disk the target could ever hold: a larger virtual size is refused by the
   * inspector's policy (a size bomb), and no compressed image inflates past it.
   */
  maxImageBytes: number;
  /** Digests computed besides the ones the source vouches for and sha256 (what the image cache keeps). */
  alsoDigests?: DigestAlgo[];
  /** Bytes of the source read while staging. */
  onProgress?: (p: Progress) => void;
  /** Called with what the source says of itself before any byte is read: a throw stops there. */
  described?: (description: SourceDescription) => void;
  /** Stops the download (and with it the copy); the caller reports the interruption. */
  signal?: AbortSignal;
}

/**
 * Describes the source and looks at its first bytes, then either hands back the stream (raw
 * content) or stages, verifies and checks the image. Throws (naming `field`) when the source
 * offers no digest and `allowUnverified` is not set, on any digest or inspection failure, and
 * when the image is refused. Nothing is created in a backend.
 */
export async function prepareImage(source: ImageSource, opts: PrepareOptions): Promise<PreparedImage> {
  const field = opts.field ?? "image";
  const description = await source.describe();
  if (!description.expect.length && !opts.allowUnverified) {
    throw new InvalidInputError(field, `${description.where} offers no digest to check its bytes against`, { hint: "give its sha256 or sha512 (--sha256), or allow an unverified image explicitly (--allow-unverified; allowUnverified in the library)" });
  }
  opts.described?.(description);
  const check = new DigestCheck(description.expect, ["sha256", ...(opts.alsoDigests ?? [])]);
  const body = await source.open({ signal: opts.signal });
  // pipe() forwards data, not errors: a transfer cut short must end the checked stream with its error.
  body.once("error", (err) => check.destroy(err));
  const stream = body.pipe(check);
  // Kept on the stream for its reader (an async iterator sees it): between the steps (the
  // volume being made) nobody listens, and an error with no listener would end the process.
  check.on("error", () => undefined);
  try {
    const head = await firstBytes(stream, PREFIX);
    if (head.length === 0) throw new InvalidInputError(field, `${description.where} holds no image (0 bytes)`);
    const compression = compressionOf(head);
    if (!compression && description.sizeBytes !== undefined) {
      const early = await earlyInspection(source, description, head, opts.signal);
      if (RAW_FAMILY.includes(early.format) && !isPolyglot(early.matches)) {
        const format = judge(early, description.declaredFormat).format;
        return { kind: "stream", description, virtualSize: description.sizeBytes, format, stream, check, head, close: () => stream.destroy() };
      }
    }
    return await stageImage(description, stream, check, head, compression, { ...opts, field });
  } catch (err) {
    stream.destroy();
    throw err;
  }
}

/**
 * The head inspected, with the source's last bytes when it can seek (read apart: a fixed VHD
 * shows what it is only there). It only chooses the way; what decides is the full inspection of
 * each way. A tail that cannot be had is not an error: the stream's own end is inspected too.
 */
async function earlyInspection(source: ImageSource, description: SourceDescription, head: Buffer, signal?: AbortSignal): Promise<Inspection> {
  const inspector = new ImageInspector();
  inspector.feed(head);
  const size = description.sizeBytes as number;
  // The head alone says qcow2 (or any other header format): the tail cannot make it raw.
  const headOnly = new ImageInspector();
  headOnly.feed(head);
  const fromHead = headOnly.finish();
  if (!RAW_FAMILY.includes(fromHead.format) || isPolyglot(fromHead.matches)) return fromHead;
  if (description.rangeable && size > head.length) {
    const from = Math.max(head.length, size - TAIL_BYTES);
    const tail = await readRange(source, from, size - from, signal).catch(() => undefined);
    if (tail?.length === size - from) inspector.supplyTail(tail, size);
  }
  return inspector.finish();
}

async function readRange(source: ImageSource, offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
  const stream = await source.open({ offset, signal });
  try {
    return await firstBytes(stream, length);
  } finally {
    stream.destroy();
  }
}

/** The policy for streaming: exactly one format, of the raw family, the one declared, no failed check. */
function judge(inspection: Inspection, declared: string | undefined): Inspection {
  return enforcePolicy(inspection, { declaredFormat: declared, allowedFormats: RAW_FAMILY });
}

/** The source's bytes (head first), inflated when compressed, into a new staging file; then checked. */
async function stageImage(description: SourceDescription, stream: Readable, check: DigestCheck, head: Buffer, compression: Compression | undefined, opts: PrepareOptions & { field: string }): Promise<StagedImage> {
  const staging = await newStagingFile({ stagingDir: opts.stagingDir, needBytes: compression ? undefined : description.sizeBytes });
  try {
    const whole = Readable.from(
      (async function* () {
        yield head;
        yield* stream;
      })(),
      { objectMode: false },
    );
    const bytes = compression ? decompressed(whole, compression, { maxBytes: opts.maxImageBytes, what: description.where }) : whole;
    const total = description.sizeBytes ?? 0;
    const report = () => opts.onProgress?.({ done: check.bytes, total: Math.max(total, check.bytes) });
    const staged = await writeSparse(staging.path, bytes, report).catch((err: unknown) => {
      if (!isErrno(err, "ENOSPC", "EDQUOT")) throw err;
      throw new NoSpaceError(`the staging area ${staging.dir} filled up while staging ${description.where}`, { hint: "free space there, or stage elsewhere (KINDLING_STAGING_DIR, or stagingDir in the library)", cause: err });
    });
    if (description.sizeBytes !== undefined && check.bytes !== description.sizeBytes) {
      throw new IntegrityError(`${description.where}: ${check.bytes} bytes arrived, it said ${description.sizeBytes}`);
    }
    if (!check.writableFinished) {
      throw new InvalidInputError(opts.field, `${description.where}: the ${compression} stream ended before the source's bytes did (data after it)`);
    }
    check.verify(description.where);
    if (staged === 0) throw new InvalidInputError(opts.field, `${description.where} holds no image (0 bytes${compression ? ` once ${compression}-decompressed` : ""})`);
    // Nothing reaches qemu-img before the inspector and the policy pass (checkImageFile's order).
    const checked = await checkImageFile(staging.path, { declaredFormat: description.declaredFormat, maxVirtualSizeBytes: opts.maxImageBytes });
    const digests = check.digests();
    return { kind: "staged", description, virtualSize: checked.virtualSize, checked, compression, digests, staging, close: () => (stream.destroy(), staging.remove()) };
  } catch (err) {
    staging.remove();
    throw err;
  }
}

/** Writes `input` to a new file at `path`, leaving all-zero chunks as holes; returns its length. */
async function writeSparse(path: string, input: Readable, report: () => void): Promise<number> {
  const handle = await openFile(path, "wx", 0o600);
  // Profiled (a 1 GiB qcow2 from a local file): gathering every piece into 1 MiB with
  // Buffer.concat and awaiting each write before reading on cost more than the disk did (the
  // copies and their garbage a third of the CPU). Pieces of 256 KiB or more are written as they
  // come; smaller ones (an http body's) are gathered first. One write is in flight while the
  // next piece is read. A skipped all-zero piece stays a hole wherever the filesystem's blocks
  // allow, and reads as zeroes either way (the file's length is set at the end).
  let offset = 0;
  let inflight: Promise<unknown> = Promise.resolve();
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let sinceReport = 0;
  const put = async (chunk: Buffer) => {
    const at = offset;
    offset += chunk.length;
    await inflight;
    inflight = isAllZero(chunk) ? Promise.resolve() : handle.write(chunk, 0, chunk.length, at);
    // The write may fail (ENOSPC) while the next piece is being read, before anyone awaits it:
    // a handler now keeps that from being an unhandled rejection, which would end the process.
    // The next await of `inflight` still throws it.
    inflight.catch(() => undefined);
    sinceReport += chunk.length;
    if (sinceReport >= STAGE_CHUNK) {
      sinceReport = 0;
      report();
    }
  };
  const flushPending = async () => {
    if (!pendingBytes) return;
    const chunk = pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes);
    pending = [];
    pendingBytes = 0;
    await put(chunk);
  };
  try {
    for await (const piece of input) {
      const b = piece as Buffer;
      if (b.length >= SMALL_PIECE) {
        await flushPending();
        await put(b);
        continue;
      }
      pending.push(b);
      pendingBytes += b.length;
      if (pendingBytes >= STAGE_CHUNK) await flushPending();
    }
    await flushPending();
    await inflight;
    // Holes at the end are bytes too: the file is as long as what came.
    await handle.truncate(offset);
    report();
    return offset;
  } finally {
    await inflight.catch(() => undefined);
    await handle.close();
  }
}

/**
 * Writes the prepared raw image into `device` (a new volume at least as large), then checks the
 * byte count, every digest and the whole stream's inspection. Throws on any failure; the
 * caller deletes the volume then.
 */
export async function writeRawImage(prepared: StreamedImage, device: BlockDevice, opts: { onProgress?: (p: Progress) => void; field?: string; signal?: AbortSignal } = {}): Promise<{ bytes: number; digests: Map<string, string> }> {
  const field = opts.field ?? "image";
  const { description, head, stream, check } = prepared;
  const inspector = new ImageInspector();
  let offset = 0;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const total = prepared.virtualSize;
  const write = async () => {
    const chunk = pending.length === 1 ? pending[0] : Buffer.concat(pending);
    pending = [];
    pendingBytes = 0;
    if (offset + chunk.length > device.size) throw new InvalidInputError(field, `${description.where} holds more than the ${total} bytes it said it would`);
    opts.signal?.throwIfAborted();
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
  const final = inspector.finish();
  // A source that could not seek shows a VHD footer only now: say what it is, plainly.
  if (!RAW_FAMILY.includes(final.format) && final.matches.length <= 1) {
    throw new InvalidInputError(field, `${description.where} turned out at its end to be a ${final.format} image, not raw; nothing was kept`, { hint: "try again from a source that serves ranges, or convert it to raw first" });
  }
  judge(final, description.declaredFormat);
  return { bytes: offset, digests: check.digests() };
}

/**
 * Converts the staged image into `volume` (new, so it reads as zeroes) with qemu-img, reaching
 * the volume the driver's own way or over kindling's NBD server (qemu-endpoint.ts). Progress
 * in bytes of the image's virtual size.
 */
export async function convertStagedImage(prepared: StagedImage, driver: VolumeDriver, volume: DriverVolume, opts: { onProgress?: (p: Progress) => void; signal?: AbortSignal } = {}): Promise<void> {
  const total = prepared.virtualSize;
  const endpoint = await qemuEndpoint(driver, { kind: "volume", volume }, { readOnly: false });
  try {
    opts.onProgress?.({ done: 0, total });
    await qemuImgConvert({ path: prepared.checked.path, format: prepared.checked.qemuFormat }, { endpoint }, {
      targetIsZero: true,
      signal: opts.signal,
      onProgress: (fraction) => opts.onProgress?.({ done: Math.round(fraction * total), total }),
    });
  } finally {
    await endpoint.close();
  }
}
