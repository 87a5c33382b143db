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
 * `path` may be an open descriptor's /proc path. The extents cover the whole range asked for:
 * a range past the file's end (qemu-img stops there) is a hole, as it reads as zeroes.
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
    if (e.length <= 0) continue; // past the end, qemu-img says "nothing here" in a 0-length entry
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
  const tail = extents[extents.length - 1];
  const covered = tail ? tail.offset + tail.length : offset;
  if (covered < offset + length) {
    if (tail?.hole) tail.length += offset + length - covered;
    else extents.push({ offset: covered, length: offset + length - covered, hole: true, zero: true });
  }
  return extents;
}
