import { InvalidInputError } from "../../util/errors";
import type { BlockDevice, BlockDeviceCapabilities, Extent } from "../contract";
import type { BlockReader, StatusRun } from "./reader";
import type { VolumeWriter } from "./writer";

// Byte-level access to an object volume: offsets and lengths become blocks of the map. Reads
// and writes of many blocks go as one batch (one ranged GET per run of stored blocks); zeroing
// and trimming whole blocks are map changes with no data; only the partial blocks at a range's
// edges are written as zeroes.

/** The most blocks a WRITE_ZEROES keeps as allocated zeroes one by one (4 MiB at 4 KiB blocks). */
const ZERO_ENTRIES_MAX = 1024;
/** Blocks handled in one batch of a large request. */
const BATCH_BLOCKS = 256;

interface Source {
  readonly sizeBytes: number;
  readBlocks(blocks: number[]): Promise<Map<number, Buffer | null>>;
  statusRuns(first: number, end: number): StatusRun[];
}

function readerSource(reader: BlockReader): Source {
  return {
    get sizeBytes() {
      return reader.state.sizeBytes;
    },
    readBlocks: (blocks) => reader.read(blocks),
    statusRuns: (first, end) => reader.statusRuns(first, end),
  };
}

export class ObjectBlockDevice implements BlockDevice {
  readonly capabilities: BlockDeviceCapabilities;
  private closed = false;
  private readonly source: Source;

  constructor(
    readonly size: number,
    private readonly blockSize: number,
    from: { writer: VolumeWriter } | { reader: BlockReader },
    private readonly release: () => Promise<void>,
  ) {
    this.writer = "writer" in from ? from.writer : undefined;
    this.source = "writer" in from ? from.writer : readerSource(from.reader);
    const rw = this.writer !== undefined;
    this.capabilities = { canWrite: rw, canFlush: rw, canTrim: rw, canZero: rw, canExtents: true, canMultiConn: true };
  }

  private readonly writer?: VolumeWriter;

  get readOnly(): boolean {
    return this.writer === undefined;
  }

  private checkRange(offset: number, length: number): void {
    if (this.closed) throw new Error("the device is closed");
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new InvalidInputError("offset", `range ${offset}+${length} is outside the device (${this.size} bytes)`);
    }
  }

  private writable(): VolumeWriter {
    if (!this.writer) throw Object.assign(new Error("the device is read-only"), { code: "EROFS" });
    return this.writer;
  }

  async pread(buffer: Buffer, offset: number): Promise<number> {
    this.checkRange(offset, buffer.length);
    const bs = this.blockSize;
    let pos = offset;
    const end = offset + buffer.length;
    while (pos < end) {
      const first = Math.floor(pos / bs);
      const last = Math.min(Math.floor((end - 1) / bs), first + BATCH_BLOCKS - 1);
      const blocks = Array.from({ length: last - first + 1 }, (_, i) => first + i);
      const got = await this.source.readBlocks(blocks);
      for (const b of blocks) {
        const from = Math.max(pos, b * bs);
        const to = Math.min(end, (b + 1) * bs);
        const data = got.get(b);
        // Past the volume's stored size (a grown volume) and unmapped blocks read as zeroes.
        if (data) data.copy(buffer, from - offset, from - b * bs, to - b * bs);
        else buffer.fill(0, from - offset, to - offset);
      }
      pos = Math.min(end, (last + 1) * bs);
    }
    return buffer.length;
  }

  async pwrite(buffer: Buffer, offset: number, opts: { fua?: boolean } = {}): Promise<void> {
    this.checkRange(offset, buffer.length);
    const w = this.writable();
    const bs = this.blockSize;
    const end = offset + buffer.length;
    // Partial blocks at the edges, the whole blocks between them in one go.
    const wholeFrom = Math.ceil(offset / bs) * bs;
    const wholeTo = Math.floor(end / bs) * bs;
    if (wholeTo <= wholeFrom) {
      for (let pos = offset; pos < end; ) {
        const b = Math.floor(pos / bs);
        const to = Math.min(end, (b + 1) * bs);
        await w.writePart(b, pos - b * bs, buffer.subarray(pos - offset, to - offset));
        pos = to;
      }
    } else {
      if (offset < wholeFrom) await w.writePart(Math.floor(offset / bs), offset % bs, buffer.subarray(0, wholeFrom - offset));
      await w.writeBlocks(wholeFrom / bs, buffer.subarray(wholeFrom - offset, wholeTo - offset));
      if (end > wholeTo) await w.writePart(wholeTo / bs, 0, buffer.subarray(wholeTo - offset));
    }
    if (opts.fua) await w.flush();
  }

  flush(): Promise<void> {
    if (this.closed) return Promise.reject(new Error("the device is closed"));
    return this.writable().flush();
  }

  /**
   * Whole blocks become a range of the map (a trim) or zero entries (WRITE_ZEROES that must stay
   * allocated, up to ZERO_ENTRIES_MAX blocks: beyond that a range of holes, which reads the same);
   * the partial blocks at the edges are written as zeroes.
   */
  private async empty(offset: number, length: number, kind: "unmap" | "zero"): Promise<void> {
    this.checkRange(offset, length);
    const w = this.writable();
    const bs = this.blockSize;
    const end = offset + length;
    const first = Math.ceil(offset / bs);
    const last = Math.floor(end / bs);
    if (first >= last) {
      // No whole block inside: zeroes written, split at the block edge it may cross.
      for (let pos = offset; pos < end; ) {
        const b = Math.floor(pos / bs);
        const to = Math.min(end, (b + 1) * bs);
        await w.writePart(b, pos - b * bs, Buffer.alloc(to - pos));
        pos = to;
      }
      return;
    }
    if (offset < first * bs) await w.writePart(Math.floor(offset / bs), offset % bs, Buffer.alloc(first * bs - offset));
    if (kind === "zero" && last - first <= ZERO_ENTRIES_MAX) for (let b = first; b < last; b++) await w.zeroBlock(b);
    else await w.unmapRange(first, last);
    if (end > last * bs) await w.writePart(last, 0, Buffer.alloc(end - last * bs));
  }

  trim(offset: number, length: number): Promise<void> {
    return this.empty(offset, length, "unmap");
  }

  zero(offset: number, length: number, opts: { mayTrim?: boolean } = {}): Promise<void> {
    return this.empty(offset, length, opts.mayTrim ? "unmap" : "zero");
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    this.checkRange(offset, length);
    const bs = this.blockSize;
    const end = offset + length;
    const first = Math.floor(offset / bs);
    const stored = Math.ceil(this.source.sizeBytes / bs);
    const last = Math.ceil(end / bs);
    const runs = this.source.statusRuns(first, Math.min(last, stored));
    // Past what the store holds (a device sized by records larger than the volume): zeroes.
    if (last > stored) runs.push({ start: Math.max(first, stored), end: last, status: "hole" });
    const out: Extent[] = [];
    for (const r of runs) {
      const from = Math.max(offset, r.start * bs);
      const to = Math.min(end, r.end * bs);
      if (to <= from) continue;
      const hole = r.status === "hole";
      const zero = r.status !== "data";
      const prev = out[out.length - 1];
      if (prev && prev.hole === hole && prev.zero === zero && prev.offset + prev.length === from) prev.length += to - from;
      else out.push({ offset: from, length: to - from, hole, zero });
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.release();
  }
}
