import type { BlockDevice, Progress } from "./contract";
import { MiB } from "../util/sizes";
import { isAllZero } from "../util/zero";

const CHUNK = 4 * MiB;

/**
 * Sparse-aware copy from one block device to another whose contents are zero (a new volume).
 * Holes in the source are skipped without reading; data that turns out to be all zeroes is not
 * written either, so the destination stays as sparse as the source. Reports progress over the
 * whole source size.
 */
export async function copyDevice(
  source: BlockDevice,
  target: BlockDevice,
  opts: { onProgress?: (p: Progress) => void; length?: number } = {},
): Promise<void> {
  const total = Math.min(opts.length ?? source.size, source.size, target.size);
  const buffer = Buffer.allocUnsafe(CHUNK);
  let done = 0;
  const report = () => opts.onProgress?.({ done, total });
  report();
  for (const extent of await source.extents(0, total)) {
    if (extent.zero) {
      done += extent.length;
      report();
      continue;
    }
    for (let offset = extent.offset; offset < extent.offset + extent.length; offset += CHUNK) {
      const length = Math.min(CHUNK, extent.offset + extent.length - offset);
      const view = buffer.subarray(0, length);
      const got = await source.pread(view, offset);
      // A fresh destination already reads as zeroes, so zero chunks are skipped and stay holes.
      if (got > 0 && !isAllZero(view.subarray(0, got))) await target.pwrite(view.subarray(0, got), offset);
      done += length;
      report();
    }
  }
  await target.flush();
}
