import type { Extent } from "../contract";
import { run } from "../../util/run";

interface QemuMapEntry {
  start: number;
  length: number;
  zero: boolean;
  data: boolean;
}

/**
 * Allocation of a raw file, from `qemu-img map` (it asks the filesystem with SEEK_DATA and
 * SEEK_HOLE, which Node does not expose). `-U` shares the file with a writer that holds it open.
 */
export async function fileExtents(path: string, offset: number, length: number): Promise<Extent[]> {
  if (length <= 0) return [];
  const { stdout } = await run("qemu-img", [
    "map", "-U", "--output=json", "-f", "raw",
    `--start-offset=${offset}`, `--max-length=${length}`, path,
  ]);
  const entries = JSON.parse(stdout) as QemuMapEntry[];
  const extents: Extent[] = [];
  for (const e of entries) {
    const hole = !e.data;
    const zero = e.zero || hole;
    const last = extents[extents.length - 1];
    // qemu-img splits long runs; merge neighbours of the same kind so callers see fewer pieces.
    if (last && last.hole === hole && last.zero === zero && last.offset + last.length === e.start) {
      last.length += e.length;
    } else {
      extents.push({ offset: e.start, length: e.length, hole, zero });
    }
  }
  return extents;
}
