import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Transform, type Readable, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Progress } from "../drivers/contract";
import { ConflictError, InvalidInputError } from "../util/errors";
import { GiB } from "../util/sizes";
import type { DiskFormat, ImageService, NewImage, UploadResult } from "./contract";
import { firstBytes, uncompressed } from "./decompress";
import { conflicting, DigestCheck } from "./digest";
import { checkImageFile } from "./inspect/check";
import { inspectFile } from "./inspect/file";
import { ImageInspector } from "./inspect/inspector";
import { DEFAULT_ALLOWED_FORMATS, enforcePolicy, policyFailures } from "./inspect/policy";
import type { DetectedFormat, Inspection } from "./inspect/types";
import type { ImageSource } from "./sources/source";
import { uploadNewImage } from "./to-image";

// A new image made from a source of bytes (a URL, a local file, another service's image),
// never with bytes kindling has not judged. Before any image exists: the source is described,
// refused when nobody vouches for its bytes (unless allowed), and its first MiB (decompressed
// when it is compressed) says what it is; a declared format that is not that is refused.
//
// Raw content (plain, partitioned, an iso) is uploaded streamed, no temp file: it needs no
// conversion and qemu-img never reads it. Every digest and the whole stream's inspection (a
// VHD footer, a polyglot) can only be judged at its end, so the last chunk is held back until
// they pass: a source that fails never gives the service a whole image, and the half-made one
// is deleted. Anything else is staged once in a private directory, its digests checked, then
// the whole pre-conversion check (inspector, policy, qemu-img info cross-checked) runs on the
// file before the image is even created: a hostile file never leaves this host. The staging
// directory goes in every case.

/** What the streamed path takes: what qemu reads as raw. */
const RAW_FAMILY: readonly DetectedFormat[] = ["raw", "gpt", "mbr", "iso"];
const PREFIX = 1 << 20;
/** Glance's default image_size_cap: what a compressed source may inflate to unless told otherwise. */
const DEFAULT_MAX_IMAGE_BYTES = 1024 * GiB;

export interface SourceToImageOptions {
  /** The image's name and metadata; its formats are decided here. */
  image: Omit<NewImage, "diskFormat" | "containerFormat">;
  /** The user's claim of the format: refused unless the content is that. */
  diskFormat?: DiskFormat;
  /** A source no digest vouches for is refused unless this is set. */
  allowUnverified?: boolean;
  /** Where a non-raw image is staged (a private directory is made in it); the system's temp dir by default. */
  stagingDir?: string;
  /** The most a compressed source may inflate to. */
  maxImageBytes?: number;
  onProgress?: (p: Progress) => void;
}

export async function sourceToImage(source: ImageSource, service: ImageService, opts: SourceToImageOptions): Promise<UploadResult> {
  const described = await source.describe();
  const where = described.where;
  if (!described.expect.length && !opts.allowUnverified) {
    throw new InvalidInputError("source", `${where} offers no digest to check its bytes against`, {
      hint: "give its sha256 or sha512 (--sha256), or allow an unverified image explicitly (--allow-unverified; allowUnverified in the library)",
    });
  }
  const clash = conflicting(described.expect);
  if (clash) throw new ConflictError(`${where}: ${clash[0].from} says its ${clash[0].algo} is ${clash[0].value}, ${clash[1].from} says ${clash[1].value}`, { field: "source" });

  const check = new DigestCheck(described.expect);
  // The digests are known once the source's own bytes have all passed, whatever reads them after.
  const sourceEnded = new Promise<void>((resolve, reject) => {
    check.once("end", resolve);
    check.once("error", reject);
  });
  sourceEnded.catch(() => undefined);
  const input = await source.open();
  const meter = new Meter((bytes) => opts.onProgress?.({ done: bytes, total: described.sizeBytes ?? bytes }));
  input.once("error", (err) => meter.destroy(err));
  meter.once("error", (err) => check.destroy(err));
  input.pipe(meter).pipe(check);
  try {
    const { stream, compression } = await uncompressed(check, { maxBytes: opts.maxImageBytes ?? DEFAULT_MAX_IMAGE_BYTES, what: where });
    const head = await firstBytes(stream, PREFIX);
    const early = new ImageInspector();
    early.feed(head);
    const seen = early.finish();
    // The user's claim against what the bytes plainly are, before anything is staged or made.
    if (seen.matches.length <= 1) refuseClaim(seen, opts.diskFormat, where);
    const verified = async () => {
      await sourceEnded;
      check.verify(where);
    };
    const ctx = { source: described, where, service, opts, stream, head, seen, verified };
    if (RAW_FAMILY.includes(seen.format) && seen.matches.length <= 1) {
      return await streamRaw({ ...ctx, sizeBytes: compression ? undefined : described.sizeBytes });
    }
    return await stageAndUpload(ctx);
  } finally {
    input.destroy();
  }
}

interface Pipeline {
  source: { declaredFormat?: string };
  where: string;
  service: ImageService;
  opts: SourceToImageOptions;
  /** The image's bytes after `head`. */
  stream: Readable;
  head: Buffer;
  /** What the first MiB is. */
  seen: Inspection;
  /** Resolves once the source ended and every digest it offers matched; throws otherwise. */
  verified: () => Promise<void>;
}

/** Refuses a user's format that the content is not, naming the option. */
function refuseClaim(inspection: Inspection, claim: DiskFormat | undefined, where: string): void {
  if (claim === undefined) return;
  const mismatch = policyFailures(inspection, { declaredFormat: claim }).find((f) => f.check === "format_mismatch");
  if (mismatch) throw new InvalidInputError("diskFormat", `${where}: ${mismatch.reason}`, { hint: "leave the format out: it is taken from the content" });
}

/** The disk_format an image of this content is declared with: the user's (checked to fit), else the content's. */
function declaredAs(format: DetectedFormat, claim: DiskFormat | undefined): DiskFormat {
  if (claim) return claim;
  if (format === "gpt" || format === "mbr") return "raw";
  return format as DiskFormat;
}

async function streamRaw(p: Pipeline & { sizeBytes?: number }): Promise<UploadResult> {
  const { where, opts } = p;
  const judge = (inspection: Inspection) => {
    if (!RAW_FAMILY.includes(inspection.format) && inspection.matches.length <= 1) {
      throw new InvalidInputError("source", `${where}: its first MiB is raw, but the whole of it is a ${inspection.format} image`);
    }
    refuseClaim(inspection, opts.diskFormat, where);
    return enforcePolicy(inspection, { declaredFormat: p.source.declaredFormat, allowedFormats: RAW_FAMILY });
  };
  const format = judge(p.seen).format;
  const inspector = new ImageInspector();
  let refusal: Error | undefined;
  const gate = new HeldLastChunk(inspector, async () => {
    try {
      await p.verified();
      const whole = judge(inspector.finish());
      if (declaredAs(whole.format, opts.diskFormat) !== declaredAs(format, opts.diskFormat)) {
        throw new InvalidInputError("source", `${where}: its first MiB is ${format}, the whole of it ${whole.format}`);
      }
    } catch (err) {
      refusal = err as Error;
      throw err;
    }
  });
  p.stream.once("error", (err) => gate.destroy(err));
  gate.write(p.head);
  p.stream.pipe(gate);
  const size = p.sizeBytes;
  try {
    return await uploadNewImage(p.service, {
      ...opts.image, diskFormat: declaredAs(format, opts.diskFormat), containerFormat: "bare",
      minDiskGiB: opts.image.minDiskGiB ?? (size !== undefined ? Math.ceil(size / GiB) : undefined),
    }, gate, { sizeBytes: size });
  } catch (err) {
    // The service's side of a refused stream is a cut upload; the reason is ours.
    throw refusal ?? err;
  }
}

async function stageAndUpload(p: Pipeline): Promise<UploadResult> {
  const { where, opts } = p;
  const dir = await mkdtemp(join(opts.stagingDir ?? tmpdir(), "kindling-image-"));
  try {
    const path = join(dir, "image");
    const head = p.head;
    const stream = p.stream;
    await pipeline(
      (async function* () {
        yield head;
        for await (const chunk of stream) yield chunk as Buffer;
      })(),
      createWriteStream(path, { flags: "wx", mode: 0o600 }),
    );
    await p.verified();
    // The claim first (an error that names the option), then the whole check, qemu-img's included.
    refuseClaim(await inspectFile(path), opts.diskFormat, where);
    const checked = await checkImageFile(path, { declaredFormat: p.source.declaredFormat, allowedFormats: DEFAULT_ALLOWED_FORMATS });
    const sizeBytes = (await stat(path)).size;
    return await uploadNewImage(p.service, {
      ...opts.image, diskFormat: declaredAs(checked.inspection.format, opts.diskFormat), containerFormat: "bare",
      minDiskGiB: opts.image.minDiskGiB ?? Math.ceil(checked.virtualSize / GiB),
    }, createReadStream(path, { highWaterMark: 4 << 20 }), { sizeBytes });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Counts what passes, for progress. */
class Meter extends Transform {
  private bytes = 0;
  constructor(private readonly report: (bytes: number) => void) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    this.report(this.bytes);
    done(null, chunk);
  }
}

/**
 * Passes everything on but the last chunk, which goes only once `approve` resolved at the end;
 * when it throws, the stream fails instead of ending. Every chunk is shown to the inspector.
 */
class HeldLastChunk extends Transform {
  private held: Buffer | undefined;
  constructor(
    private readonly inspector: ImageInspector,
    private readonly approve: () => Promise<void>,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.inspector.feed(chunk);
    const previous = this.held;
    this.held = chunk;
    done(null, previous);
  }
  override _flush(done: TransformCallback): void {
    this.approve().then(
      () => done(null, this.held),
      (err: Error) => done(err),
    );
  }
}
