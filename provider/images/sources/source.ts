import type { Readable } from "node:stream";
import type { Digest } from "../digest";

// Where an image's bytes come from: a local file, an http(s) URL, an image service (Glance).
// A source says what it knows before any byte moves (describe), then hands out the bytes from
// an offset (open), so an interrupted download resumes where the verified bytes end.

/** What a volume made from the source records of where it came from (never a secret). */
export interface SourceOrigin {
  kind: "glance" | "url" | "file";
  service?: string;
  imageId?: string;
  imageName?: string;
  /** A URL without credentials or query, or a file's path. */
  location?: string;
  containerFormat?: string;
  minRamMiB?: number;
  properties?: Record<string, string>;
}

export interface SourceDescription {
  /**
   * What names these bytes before they are read, for the image cache: the digest the user or
   * the service vouches for, else something that changes whenever the bytes may have (a
   * file's inode and mtime, a URL's ETag). Undefined when nothing does.
   */
  identity?: string;
  /** What the source says it is, not yet checked against the bytes (disk_format). */
  declaredFormat?: string;
  /** Bytes the source will send, when it says. */
  sizeBytes?: number;
  /** Digests to check the bytes against; empty when nobody vouches for them. */
  expect: Digest[];
  /** The service's word on the smallest disk for it (Glance's min_disk), in GiB. */
  minDiskGiB?: number;
  /** The disk's size as the service recognised it: a hint to check early, never trusted. */
  virtualSizeHint?: number;
  /** Whether `open` can start past the first byte. */
  rangeable: boolean;
  /**
   * Where the service itself keeps the bytes (Glance's direct_url, then its locations), when it
   * shows them: what a driver may clone instead of copying (an rbd:// snapshot in its cluster).
   */
  locations?: string[];
  /** For messages: the file or URL (without credentials or query), never a secret. */
  where: string;
  origin: SourceOrigin;
}

export interface ImageSource {
  describe(): Promise<SourceDescription>;
  /**
   * The digests the user pinned (`--sha256`), known without asking anyone: what lets the image
   * cache find the bytes with no network at all. Sources whose digests come from a service omit it.
   */
  pinnedDigests?(): Digest[];
  /** Where it comes from, known without asking anyone (what a volume made from a cached copy records). */
  origin?(): SourceOrigin;
  /** The bytes from `offset` on; errors (a stall, a short body) end the stream with an error. */
  open(opts?: { offset?: number; signal?: AbortSignal }): Promise<Readable>;
}
