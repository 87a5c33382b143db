// Inspecting a local (staged) file: the prefix is streamed through the inspector as a download
// would be, then the regions the probes asked for and the tail are read directly, so a large
// staged image is never read whole just to be inspected.
import { constants } from "node:fs";
import { open } from "node:fs/promises";
import { UnsafeFileError } from "../../util/errors";
import { DEFAULT_PREFIX_BYTES, ImageInspector, TAIL_BYTES, type InspectorOptions } from "./inspector";
import type { Inspection } from "./types";

const CHUNK = 64 * 1024;

export async function inspectFile(path: string, opts: InspectorOptions = {}): Promise<Inspection> {
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new UnsafeFileError(`${path} is not a regular file; only a regular file is inspected as an image`);
    const size = st.size;
    const inspector = new ImageInspector(opts);
    const prefix = Math.min(size, opts.prefixBytes ?? DEFAULT_PREFIX_BYTES);
    const buf = Buffer.alloc(CHUNK);
    let at = 0;
    while (at < prefix) {
      const { bytesRead } = await handle.read(buf, 0, Math.min(CHUNK, prefix - at), at);
      if (bytesRead === 0) break;
      inspector.feed(buf.subarray(0, bytesRead));
      at += bytesRead;
    }
    // Regions can lead to further regions (the VHDX region table locates the metadata table).
    for (let round = 0; round < 4; round++) {
      const pending = inspector.pendingRegions().filter((r) => r.offset < size);
      if (pending.length === 0) break;
      for (const region of pending) {
        const data = Buffer.alloc(Math.min(region.length, size - region.offset));
        const { bytesRead } = await handle.read(data, 0, data.length, region.offset);
        inspector.supply(region.offset, data.subarray(0, bytesRead));
      }
    }
    const tailLength = Math.min(size, TAIL_BYTES);
    const tail = Buffer.alloc(tailLength);
    const { bytesRead } = await handle.read(tail, 0, tailLength, size - tailLength);
    inspector.supplyTail(tail.subarray(0, bytesRead), size);
    return inspector.finish();
  } finally {
    await handle.close();
  }
}
