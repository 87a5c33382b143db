import { Readable } from "node:stream";
import type { BlockDevice, Progress } from "../drivers/contract";
import { InterruptedError } from "../util/errors";

// A volume's or snapshot's bytes as one stream, start to end, for an image service to store
// raw. Holes (what the device's extents call zero) are sent as zeroes without being read; data
// is read in large chunks a few at a time ahead of the consumer, which paces the reads: the
// stream never holds more than those chunks.

const CHUNK = 8 * 1024 * 1024;
const READ_AHEAD = 4;
const ZEROES = Buffer.alloc(CHUNK);

export function deviceStream(device: BlockDevice, opts: { signal?: AbortSignal; onProgress?: (p: Progress) => void; what?: string } = {}): Readable {
  return Readable.from(chunks(device, opts), { objectMode: false, highWaterMark: CHUNK });
}

async function* chunks(device: BlockDevice, opts: { signal?: AbortSignal; onProgress?: (p: Progress) => void; what?: string }): AsyncGenerator<Buffer> {
  const total = device.size;
  const queue: Array<{ length: number; read?: Promise<Buffer> }> = [];
  let done = 0;
  opts.onProgress?.({ done, total });
  const next = async (): Promise<Buffer> => {
    const piece = queue.shift() as { length: number; read?: Promise<Buffer> };
    const data = piece.read ? await piece.read : ZEROES.subarray(0, piece.length);
    done += piece.length;
    opts.onProgress?.({ done, total });
    if (opts.signal?.aborted) throw new InterruptedError(`copy of ${opts.what ?? "the device"} interrupted`);
    return data;
  };
  try {
    for (const extent of await device.extents(0, total)) {
      for (let offset = extent.offset; offset < extent.offset + extent.length; offset += CHUNK) {
        const length = Math.min(CHUNK, extent.offset + extent.length - offset);
        if (extent.zero) queue.push({ length });
        else {
          const buffer = Buffer.allocUnsafe(length);
          const read = device.pread(buffer, offset).then(() => buffer);
          read.catch(() => undefined); // seen when its turn comes
          queue.push({ length, read });
        }
        while (queue.length > READ_AHEAD) yield await next();
      }
    }
    while (queue.length) yield await next();
  } finally {
    // Reads still under way end before the caller closes the device.
    await Promise.allSettled(queue.map((p) => p.read));
  }
}
