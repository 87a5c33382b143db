// The streaming inspector: fed an image's bytes in chunks of any size, it holds a bounded prefix,
// the regions the probes ask for at known offsets (a VHDX metadata table) and a small rolling
// tail (VHD and streamOptimized vmdk footers), and never more. At the end it runs every probe
// over exactly the bytes it held and reports what matched. It decides nothing about policy
// (see policy.ts): it only says what the bytes are.
import { allProbes } from "./probes";
import type { CheckFailure, DetectedFormat, FormatProbe, ImageView, Inspection, Region } from "./types";

export const DEFAULT_PREFIX_BYTES = 1 << 20;
/** The tail kept while streaming: the vmdk footer needs the last 1.5 KiB, the VHD footer 512 bytes. */
export const TAIL_BYTES = 4096;
/** Captured regions beyond the prefix are capped so a hostile table cannot make the inspector hold the image. */
export const MAX_CAPTURE_BYTES = 4 << 20;
export const MAX_REGION_BYTES = 1 << 20;

interface Capture {
  region: Region;
  data: Buffer;
  /** Bytes filled so far (captures fill in order as the stream passes). */
  filled: number;
}

const QEMU_FORMAT: Partial<Record<DetectedFormat, string>> = {
  raw: "raw",
  iso: "raw",
  gpt: "raw",
  mbr: "raw",
  qcow2: "qcow2",
  vmdk: "vmdk",
  vhd: "vpc",
  vhdx: "vhdx",
  vdi: "vdi",
};

export interface InspectorOptions {
  prefixBytes?: number;
  /** The vmdk createType allowlist the vmdk probe checks against. */
  vmdkTypes?: readonly string[];
}

export class ImageInspector {
  private readonly probes: FormatProbe[];
  private readonly prefixLimit: number;
  // The prefix and the tail are preallocated and filled in place: a stream fed one byte at a time
  // must cost no more than one fed a MiB at a time.
  private readonly prefixBuf: Buffer;
  private prefixLength = 0;
  private readonly captures: Capture[] = [];
  private captureBytes = 0;
  private readonly missed: Region[] = [];
  private readonly tailRing = Buffer.alloc(TAIL_BYTES);
  /** A tail handed over whole by `supplyTail` (a seekable source), overriding the ring. */
  private suppliedTail: { data: Buffer; offset: number } | undefined;
  private position = 0;
  private ended = false;
  private size: number | undefined;

  constructor(opts: InspectorOptions = {}) {
    this.prefixLimit = opts.prefixBytes ?? DEFAULT_PREFIX_BYTES;
    this.probes = allProbes(opts.vmdkTypes);
    this.prefixBuf = Buffer.alloc(this.prefixLimit);
  }

  /** How many bytes have been fed. */
  get offset(): number {
    return this.position;
  }

  /** Feeds the next chunk of the image. */
  feed(chunk: Uint8Array): void {
    if (this.ended) throw new Error("the inspector was fed after the end of the image");
    const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const start = this.position;
    let changed = false;
    if (this.prefixLength < this.prefixLimit) {
      this.prefixLength += buf.copy(this.prefixBuf, this.prefixLength, 0, this.prefixLimit - this.prefixLength);
      changed = true;
    }
    // The probes are asked what they need whenever what is held has grown: they read the prefix
    // and earlier captures to find where their tables are. A table completed by this chunk can
    // point at bytes later in the same chunk, so asking and filling repeat until nothing new.
    if (changed) this.requestRegions();
    let completed = this.fillCaptures(buf, start);
    for (let round = 0; round < 8 && completed; round++) {
      this.requestRegions();
      completed = this.fillCaptures(buf, start);
    }
    this.position += buf.length;
    this.keepTail(buf);
  }

  /** Whether the probes still wait for bytes the stream has not reached yet. */
  get wantsMore(): boolean {
    if (this.prefixLength < this.prefixLimit) return true;
    this.requestRegions();
    return this.captures.some((c) => c.filled < c.data.length);
  }

  /** The regions still wanted (for a reader that can seek, such as a local file). */
  pendingRegions(): Region[] {
    this.requestRegions();
    return this.captures.filter((c) => c.filled < c.data.length && c.region.offset >= this.position).map((c) => c.region);
  }

  /** Supplies a wanted region's bytes directly (a seekable source reading out of order). */
  supply(offset: number, data: Buffer): void {
    for (const c of this.captures) {
      if (c.region.offset === offset && c.filled < c.data.length) {
        const n = Math.min(data.length, c.data.length);
        data.copy(c.data, 0, 0, n);
        c.filled = n;
      }
    }
  }

  /** Supplies the image's last bytes and size without streaming the whole image (a local file). */
  supplyTail(tail: Buffer, totalSize: number): void {
    const data = Buffer.from(tail.subarray(Math.max(0, tail.length - TAIL_BYTES)));
    this.suppliedTail = { data, offset: totalSize - data.length };
    this.size = totalSize;
  }

  /** Marks the end of the image and returns what it is. */
  finish(): Inspection {
    if (!this.ended) {
      this.ended = true;
      if (this.size === undefined) this.size = this.position;
    }
    this.requestRegions();
    for (const c of this.captures) {
      // A region the stream had passed before anyone asked for it (or never reached) is missing.
      if (c.filled < c.data.length) this.miss(c.region);
    }
    return this.inspect();
  }

  private view(): ImageView {
    const prefix = this.prefixBuf.subarray(0, this.prefixLength);
    const captures = this.captures;
    // The tail is put in order only if a probe reads it (at the end, for footers).
    let tail: { data: Buffer; offset: number } | undefined;
    const tailOf = () => (tail ??= this.suppliedTail ?? this.ringTail());
    const totalSize = this.ended || this.size !== undefined ? this.size : undefined;
    return {
      prefix,
      totalSize,
      read(offset, length) {
        if (offset < 0 || length < 0) return undefined;
        if (offset + length <= prefix.length) return prefix.subarray(offset, offset + length);
        for (const c of captures) {
          const rel = offset - c.region.offset;
          if (rel >= 0 && rel + length <= c.filled) return c.data.subarray(rel, rel + length);
        }
        if (totalSize === undefined) return undefined;
        const t = tailOf();
        if (offset >= t.offset && offset + length <= t.offset + t.data.length) return t.data.subarray(offset - t.offset, offset - t.offset + length);
        return undefined;
      },
    };
  }

  private requestRegions(): void {
    if (this.prefixLength === 0) return;
    const view = this.view();
    for (const probe of this.probes) {
      if (!probe.needs) continue;
      for (const region of probe.needs(view)) this.addCapture(region, view);
    }
  }

  private miss(region: Region): void {
    if (!this.missed.some((m) => m.offset === region.offset && m.length === region.length)) this.missed.push(region);
  }

  private addCapture(region: Region, view: ImageView): void {
    if (this.captures.some((c) => c.region.offset === region.offset && c.region.length === region.length)) return;
    if (region.offset + region.length <= this.prefixLength) return; // already held
    if (view.read(region.offset, region.length)) return;
    const length = Math.min(region.length, MAX_REGION_BYTES);
    if (this.captureBytes + length > MAX_CAPTURE_BYTES) {
      this.miss(region);
      return;
    }
    const capture: Capture = { region: { offset: region.offset, length }, data: Buffer.alloc(length), filled: 0 };
    // A region that starts before the stream's position can still be filled from the prefix if the
    // prefix covers its start; otherwise its bytes have gone by and it is missed.
    if (region.offset < this.position) {
      const fromPrefix = Math.max(0, Math.min(this.prefixLength, region.offset + length) - region.offset);
      if (region.offset + fromPrefix < this.position) {
        this.miss(region);
        return;
      }
      view.prefix.copy(capture.data, 0, region.offset, region.offset + fromPrefix);
      capture.filled = fromPrefix;
    }
    this.captureBytes += length;
    this.captures.push(capture);
  }

  /** Fills every capture from the chunk; true when one of them was completed by it. */
  private fillCaptures(buf: Buffer, start: number): boolean {
    let completed = false;
    for (const c of this.captures) if (this.fillCapture(c, buf, start)) completed = true;
    return completed;
  }

  /** Copies what this chunk holds of a capture; true when that completed it. */
  private fillCapture(c: Capture, buf: Buffer, start: number): boolean {
    const want = c.region.offset + c.filled; // the next byte this capture needs
    if (c.filled >= c.data.length || want < start || want >= start + buf.length) return false;
    const from = want - start;
    const n = Math.min(buf.length - from, c.data.length - c.filled);
    buf.copy(c.data, c.filled, from, from + n);
    c.filled += n;
    return c.filled === c.data.length;
  }

  /** Writes the chunk's last bytes into the ring; `position` has already moved past the chunk. */
  private keepTail(buf: Buffer): void {
    const keep = buf.subarray(Math.max(0, buf.length - TAIL_BYTES));
    let at = (this.position - keep.length) % TAIL_BYTES;
    let from = 0;
    while (from < keep.length) {
      const n = Math.min(keep.length - from, TAIL_BYTES - at);
      keep.copy(this.tailRing, at, from, from + n);
      from += n;
      at = (at + n) % TAIL_BYTES;
    }
  }

  /** The ring's contents in order: the last bytes fed, and where they sit in the image. */
  private ringTail(): { data: Buffer; offset: number } {
    const held = Math.min(this.position, TAIL_BYTES);
    const end = this.position % TAIL_BYTES;
    const data = held < TAIL_BYTES ? Buffer.from(this.tailRing.subarray(0, held)) : Buffer.concat([this.tailRing.subarray(end), this.tailRing.subarray(0, end)]);
    return { data, offset: this.position - held };
  }

  private inspect(): Inspection {
    const view = this.view();
    const matched = this.probes.filter((p) => p.matches(view));
    const matches = matched.map((p) => p.format);
    const chosen = decide(matches);
    const probe = matched.find((p) => p.format === chosen);
    const failures: CheckFailure[] = [];
    // The decided format's checks run; for a polyglot every matched probe's do, so the refusal
    // also says which of its faces is hostile. A hybrid iso's MBR is not held to a plain gpt
    // disk's rules (Glance does the same), which is why the others' checks do not always run.
    const checked = isPolyglot(matches) ? matched : matched.filter((p) => p.format === chosen);
    for (const p of checked) {
      for (const check of p.checks) {
        const reason = check.run(view);
        if (reason !== undefined) failures.push({ check: check.name, reason });
      }
    }
    const details: Record<string, unknown> = {};
    for (const p of matched) Object.assign(details, p.details?.(view) ?? {});
    return {
      format: chosen,
      matches,
      qemuFormat: QEMU_FORMAT[chosen],
      virtualSize: probe?.virtualSize ? probe.virtualSize(view) : chosen === "raw" ? view.totalSize : undefined,
      totalSize: view.totalSize,
      details,
      failures,
      missed: [...this.missed],
    };
  }
}

// Content that is raw to qemu and may sit inside a container without making it a polyglot: a
// hybrid iso carries a gpt or mbr for USB boot, and a fixed VHD is a raw disk (often partitioned,
// sometimes an iso) with a footer appended. Reading such an image either way gives the same disk.
const RAW_LAYOUTS: readonly DetectedFormat[] = ["gpt", "mbr", "iso"];
const CONTAINERS_OF_RAW: readonly DetectedFormat[] = ["vhd", "iso"];

/** The matches that are not explained by a raw layout inside a container of raw. */
function distinct(matches: DetectedFormat[]): DetectedFormat[] {
  const container = CONTAINERS_OF_RAW.find((c) => matches.includes(c));
  if (!container) return matches;
  return matches.filter((m) => m === container || !RAW_LAYOUTS.includes(m));
}

/**
 * The one format of a set of matches: none is raw; a hybrid iso is an iso (as Glance decides),
 * a fixed VHD of a partitioned disk is a vhd; anything else with more than one match stays
 * ambiguous and is reported as the first, for the policy to refuse as a polyglot.
 */
export function decide(matches: DetectedFormat[]): DetectedFormat {
  if (matches.length === 0) return "raw";
  const rest = distinct(matches);
  if (rest.length === 1) return rest[0];
  return matches[0];
}

/** Whether a set of matches is a polyglot (more than one format, raw layouts in a container of raw aside). */
export function isPolyglot(matches: DetectedFormat[]): boolean {
  return distinct(matches).length > 1;
}
