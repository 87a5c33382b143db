// The shapes shared by the format probes, the streaming inspector and the policy that judges an
// image. Kept apart so each probe file depends on nothing but these and the byte readers.

/** What content detection can say. gpt/mbr/iso are raw to qemu; the compressions wrap a disk image. */
export type DetectedFormat =
  | "raw"
  | "qcow2"
  | "qcow" // qcow version 1: banned
  | "vmdk"
  | "vhd"
  | "vhdx"
  | "vdi"
  | "qed"
  | "luks"
  | "iso"
  | "gpt"
  | "mbr"
  | "gzip"
  | "xz"
  | "zstd"
  | "bzip2";

export const COMPRESSIONS: readonly DetectedFormat[] = ["gzip", "xz", "zstd", "bzip2"];

/** A byte range of the image a probe needs to see (a header, a table, a footer). */
export interface Region {
  offset: number;
  length: number;
}

/**
 * What a probe sees of the image: the held prefix, the regions captured for it, and (once the end
 * is known) the tail. `read` answers only from bytes actually held, never from the file again, so
 * what the probes decide is what was streamed.
 */
export interface ImageView {
  /** The first bytes of the image (at most the inspector's prefix limit). */
  readonly prefix: Buffer;
  /** The image's size, once the stream has ended (or the file was stat'ed). */
  readonly totalSize: number | undefined;
  /** Bytes [offset, offset+length) if every one of them is held, else undefined. */
  read(offset: number, length: number): Buffer | undefined;
}

/** A named safety check: returns why the image fails it, or undefined when it passes. */
export interface SafetyCheck {
  name: string;
  run(view: ImageView): string | undefined;
}

/** One format's detector: content match, virtual size, the regions it needs, and its checks. */
export interface FormatProbe {
  format: DetectedFormat;
  /** Regions beyond the prefix this probe needs now (it may ask for more once it has read these). */
  needs?(view: ImageView): Region[];
  /** Whether the content is this format. */
  matches(view: ImageView): boolean;
  /** The disk's virtual size in bytes, where the header gives it. */
  virtualSize?(view: ImageView): number | undefined;
  /** Facts worth reporting (qcow2 version, vmdk createType, vhd disk type). */
  details?(view: ImageView): Record<string, unknown>;
  /** Every probe names its checks; a format with nothing to check says so with an empty list. */
  checks: SafetyCheck[];
}

export interface CheckFailure {
  check: string;
  reason: string;
}

/** What the inspector found, before any policy is applied. */
export interface Inspection {
  /** The single format decided (see `matches` for all that matched); raw when nothing else did. */
  format: DetectedFormat;
  /** Every format whose probe matched; more than one (iso+gpt aside) is a polyglot. */
  matches: DetectedFormat[];
  /** The name to give qemu-img's `-f` (vpc for vhd, raw for gpt/mbr/iso); undefined for compressed or banned content qemu must not read. */
  qemuFormat: string | undefined;
  virtualSize: number | undefined;
  totalSize: number | undefined;
  details: Record<string, unknown>;
  /** Safety checks of the decided format (and of every matched one) that failed. */
  failures: CheckFailure[];
  /** Regions some probe asked for that the stream had already passed: the verdict is then incomplete. */
  missed: Region[];
}
