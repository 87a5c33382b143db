import { createReadStream } from "node:fs";
import { rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { Transform, type TransformCallback } from "node:stream";
import type { Progress } from "../drivers/contract";
import { BackendError, NoSpaceError } from "../util/errors";
import type { ImageService, NewImage, UploadResult } from "./contract";
import { checkImageFile } from "./inspect/check";
import type { QemuEndpoint } from "./qemu-endpoint";
import { qemuImgConvert } from "./qemu-convert";
import { makeStagingDir, stagingArea } from "./staging";
import { uploadNewImage } from "./to-image";

// A volume's or snapshot's bytes as an image of another format than raw (qcow2, vmdk, vhdx,
// vdi). qemu-img converts from the storage's endpoint (the pool file handed over, or kindling's
// NBD server) into a file in a private staging directory: none of these formats can be written
// as a stream by the tools here. Before it is uploaded, kindling's own inspector and qemu-img
// info (cross-checked) must find exactly what was asked for: that format, the storage's size,
// no backing or data file. The staging directory goes in every case; the image, on any failure.

/** The formats made this way, and what qemu-img is told to create them as. */
export const CONVERTED_FORMATS = {
  qcow2: [],
  // The one vmdk Glance and Cinder accept as uploaded data: a single self-contained stream.
  vmdk: ["subformat=streamOptimized"],
  vhdx: [],
  vdi: [],
} as const satisfies Record<string, readonly string[]>;

export type ConvertedFormat = keyof typeof CONVERTED_FORMATS;

export interface ConvertedSource {
  /** For messages: "volume db", "snapshot before-upgrade". */
  what: string;
  /** The storage's size in bytes: the image's virtual size must be exactly this. */
  sizeBytes: number;
  /** How qemu-img reads the storage; closed here once it has. */
  endpoint(): Promise<QemuEndpoint>;
}

export interface ConvertToImageOptions {
  format: ConvertedFormat;
  /** qcow2 only: compressed clusters. */
  compress?: boolean;
  stagingDir?: string;
  /** Half for the conversion, half for the upload, in bytes of the storage. */
  onProgress?: (p: Progress) => void;
}

export async function convertToImage(source: ConvertedSource, service: ImageService, image: Omit<NewImage, "diskFormat" | "containerFormat">, opts: ConvertToImageOptions): Promise<UploadResult> {
  const total = source.sizeBytes;
  const report = (fraction: number) => opts.onProgress?.({ done: Math.round(total * Math.min(1, fraction)), total });
  // Private (owner only): the staged image is the storage's data.
  const root = stagingArea(opts.stagingDir);
  const dir = await makeStagingDir(opts.stagingDir);
  try {
    const path = join(dir, `image.${opts.format}`);
    report(0);
    const endpoint = await source.endpoint();
    try {
      await qemuImgConvert({ endpoint }, { path, format: opts.format }, {
        compress: opts.compress,
        createOptions: [...CONVERTED_FORMATS[opts.format]],
        onProgress: (f) => report(f / 2),
      });
    } catch (err) {
      if (err instanceof BackendError && /No space left on device/i.test(err.message)) {
        throw new NoSpaceError(`the staging directory ${root} filled up while qemu-img made the ${opts.format} image of ${source.what}; the staged file was removed`, {
          command: err.command, cause: err, hint: "free space there, or stage elsewhere (stagingDir in the library; KINDLING_STAGING_DIR for the command)",
        });
      }
      throw err;
    } finally {
      await endpoint.close();
    }
    const checked = await checkImageFile(path, { declaredFormat: opts.format, allowedFormats: [opts.format] });
    const wrong = [
      checked.inspection.format !== opts.format && `it is ${checked.inspection.format}, not ${opts.format}`,
      checked.virtualSize !== total && `its virtual size is ${checked.virtualSize} bytes, the ${source.what} holds ${total}`,
      opts.format === "vmdk" && checked.inspection.details.vmdkCreateType !== "streamOptimized" && `its createType is ${String(checked.inspection.details.vmdkCreateType)}, not streamOptimized`,
    ].filter((w): w is string => typeof w === "string");
    if (wrong.length) throw new BackendError(`qemu-img made a ${opts.format} image of ${source.what} that is not what was asked for: ${wrong.join("; ")}`);
    const sizeBytes = (await stat(path)).size;
    const file = createReadStream(path, { highWaterMark: 4 << 20 });
    const body = new Counted((sent) => report(0.5 + sent / sizeBytes / 2));
    file.once("error", (err) => body.destroy(err));
    file.pipe(body);
    return await uploadNewImage(service, { ...image, diskFormat: opts.format, containerFormat: "bare" }, body, { sizeBytes });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

class Counted extends Transform {
  private bytes = 0;
  constructor(private readonly report: (bytes: number) => void) {
    super({ highWaterMark: 4 << 20 });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    this.report(this.bytes);
    done(null, chunk);
  }
}
