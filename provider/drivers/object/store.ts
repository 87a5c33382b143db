// What the driver needs from an object store, whichever API reaches it. Keys are relative to
// the backend's bucket (S3) or container (Swift); bodies are Buffers, and a body to write may be
// a list of them, sent one after the other (a record's header and its blocks, never copied into
// one buffer first).

/** What a PUT sends: one Buffer, or several sent back to back as one body. */
export type Body = Buffer | readonly Buffer[];

export function bodyLength(body: Body): number {
  if (Buffer.isBuffer(body)) return body.length;
  let n = 0;
  for (const b of body) n += b.length;
  return n;
}

export interface StoredObject {
  etag: string;
  size: number;
}

export interface ByteRange {
  offset: number;
  length: number;
}

export interface PutOptions {
  /** Create only: fails with PreconditionFailed when the key exists (the commit and fencing step). */
  ifNoneMatch?: boolean;
  /** Replace only this version (S3 compare-and-swap of the lease); unquoted ETag. */
  ifMatch?: string;
  /** Swift: the object expires by itself (the lease's TTL there). */
  deleteAfterSeconds?: number;
}

export interface GetOptions {
  /**
   * The object is never overwritten once it exists (a log record): whichever copy the store
   * finds holds the right bytes, so Swift need not ask every replica for the newest (X-Newest).
   */
  immutable?: boolean;
  /**
   * Sees the bytes asked for as they arrive: the first `filled` bytes of `body` are in and stay
   * as they are (a ranged GET's `body` starts at the range's offset). A hint for early use:
   * it may not be called at all, and a retried request starts over with another Buffer; what
   * the GET resolves to is what counts.
   */
  onData?: (body: Buffer, filled: number) => void;
}

/** A conditional write lost: someone else's object is at the key (or it changed). */
export class PreconditionFailed extends Error {
  constructor(readonly key: string) {
    super(`precondition failed on ${key}`);
  }
}

export interface ObjectStore {
  /** Where the store is, for messages: the endpoint and bucket or container, never a credential. */
  readonly where: string;
  readonly api: "s3" | "swift";
  /** Checks credentials and that the bucket or container exists; errors name the field at fault. */
  check(): Promise<void>;
  /** Makes the bucket or container (tests, first-time setup; the driver never does on its own). */
  createContainer(): Promise<void>;
  put(key: string, body: Body, opts?: PutOptions): Promise<StoredObject>;
  /** The object's bytes (a range of them), or undefined when there is none. Swift: the newest replica, unless `immutable`. */
  get(key: string, range?: ByteRange, opts?: GetOptions): Promise<Buffer | undefined>;
  /** The object's bytes with its ETag (for a compare-and-swap), or undefined. Swift: the newest replica. */
  read(key: string): Promise<{ body: Buffer; etag: string } | undefined>;
  head(key: string): Promise<StoredObject | undefined>;
  /** Missing is success. */
  delete(key: string): Promise<void>;
  /** Every key under a prefix, in key order. Never on the write or recovery path. */
  list(prefix: string): AsyncIterable<{ key: string; size: number }>;
}
