import { createGunzip } from "node:zlib";
import { PassThrough, Transform, type Readable, type TransformCallback } from "node:stream";
import { execa } from "execa";
import { BackendError, InvalidInputError } from "../util/errors";
import { COMPRESSION_MAGIC_BYTES, compressionOf, type Compression } from "./inspect/compression";

// Compressed images are recognised by their first bytes (the inspector's magic: one truth for
// both), never by a file name or a Content-Type (a name can lie; terraform-provider-openstack
// trusts the header, and its users hit that). gzip is inflated in this process; xz, zstd and bzip2 by their own tools, streamed
// through their stdin and stdout (argument arrays, no shell). What comes out is counted: a
// small file that inflates past the limit is stopped there (a decompression bomb).

export type { Compression } from "./inspect/compression";

const TOOL: Record<Exclude<Compression, "gzip">, string> = { xz: "xz", zstd: "zstd", bzip2: "bzip2" };

/** Stops the stream once more than `max` bytes passed. */
class Limit extends Transform {
  private passed = 0;
  constructor(
    private readonly max: number,
    private readonly what: string,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.passed += chunk.length;
    if (this.passed > this.max) {
      done(new InvalidInputError("image", `${this.what} decompresses to more than ${this.max} bytes, the most allowed`, { hint: "raise the limit if the image really is that large" }));
      return;
    }
    done(null, chunk);
  }
}

/** A stream of `input` inflated, at most `maxBytes` of it. */
export function decompressed(input: Readable, kind: Compression, opts: { maxBytes: number; what: string }): Readable {
  const limit = new Limit(opts.maxBytes, opts.what);
  const fail = (err: Error) => limit.destroy(err);
  input.once("error", fail);
  if (kind === "gzip") {
    const gunzip = createGunzip();
    gunzip.once("error", (err) => fail(new InvalidInputError("image", `${opts.what} is not valid gzip: ${err.message}`)));
    input.pipe(gunzip).pipe(limit);
  } else {
    const tool = TOOL[kind];
    const child = execa(tool, ["-dc"], { stdin: "pipe", stdout: "pipe", stderr: "pipe", reject: false, buffer: { stdout: false, stderr: true } });
    input.pipe(child.stdin as NodeJS.WritableStream);
    // The tool stops reading once it fails; what the source still sends goes nowhere.
    (child.stdin as NodeJS.WritableStream).on("error", () => undefined);
    (child.stdout as Readable).pipe(limit, { end: false });
    let finished = false;
    void child.then((result) => {
      finished = true;
      if (result.exitCode === 0) limit.end();
      else if (!limit.destroyed) {
        const why = result.code === "ENOENT" ? `${tool} is not installed` : `${tool} -dc failed: ${String(result.stderr ?? "").trim().slice(0, 300)}`;
        fail(result.code === "ENOENT" ? new BackendError(why, { hint: "run `make setup` (as root)" }) : new InvalidInputError("image", `${opts.what} is not valid ${kind}: ${why}`));
      }
    });
    // Whoever stops reading early (a refused image) ends the tool too.
    limit.once("close", () => {
      if (!finished) child.kill();
      input.unpipe();
    });
  }
  return limit;
}

/**
 * Looks at the first bytes of `input` and hands back the image's bytes: inflated when they are
 * compressed (which one is `compression`), as they came otherwise.
 */
export async function uncompressed(input: Readable, opts: { maxBytes: number; what: string }): Promise<{ stream: Readable; compression?: Compression }> {
  const head = await firstBytes(input, COMPRESSION_MAGIC_BYTES);
  const kind = compressionOf(head);
  const replay = new PassThrough();
  replay.write(head);
  input.once("error", (err) => replay.destroy(err));
  input.pipe(replay);
  if (!kind) return { stream: replay };
  return { stream: decompressed(replay, kind, opts), compression: kind };
}

/** Reads until `n` bytes (or the end) without losing any: the rest stays in `input`. */
export async function firstBytes(input: Readable, n: number): Promise<Buffer> {
  const got: Buffer[] = [];
  let have = 0;
  while (have < n) {
    const chunk = input.read() as Buffer | null;
    if (chunk) {
      got.push(chunk);
      have += chunk.length;
      continue;
    }
    if (input.readableEnded) break;
    const ended = await new Promise<boolean>((resolve, reject) => {
      const done = (value: boolean) => {
        input.off("readable", onReadable).off("end", onEnd).off("error", onError);
        resolve(value);
      };
      const onReadable = () => done(false);
      const onEnd = () => done(true);
      const onError = (err: Error) => {
        input.off("readable", onReadable).off("end", onEnd);
        reject(err);
      };
      input.once("readable", onReadable).once("end", onEnd).once("error", onError);
    });
    if (ended) break;
  }
  const all = Buffer.concat(got);
  if (all.length > n) input.unshift(all.subarray(n));
  return all.subarray(0, n);
}
