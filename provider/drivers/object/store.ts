// What the driver needs from an object store, whichever API reaches it. Keys are relative to
// the backend's bucket (S3) or container (Swift); bodies are Buffers.

export interface StoredObject {
  etag: string;
  size: number;
}

export interface PutOptions {
  /** Create only: fails with PreconditionFailed when the key exists (the commit and fencing step). */
  ifNoneMatch?: boolean;
  /** Replace only this version (S3 compare-and-swap of the lease); unquoted ETag. */
  ifMatch?: string;
  /** Swift: the object expires by itself (the lease's TTL there). */
  deleteAfterSeconds?: number;
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
  put(key: string, body: Buffer, opts?: PutOptions): Promise<StoredObject>;
  /** The object's bytes (a range of them), or undefined when there is none. */
  get(key: string, range?: { offset: number; length: number }): Promise<Buffer | undefined>;
  /** The object's bytes with its ETag (for a compare-and-swap), or undefined. Swift: the newest replica. */
  read(key: string): Promise<{ body: Buffer; etag: string } | undefined>;
  head(key: string): Promise<StoredObject | undefined>;
  /** Missing is success. */
  delete(key: string): Promise<void>;
  /** Every key under a prefix, in key order. Never on the write or recovery path. */
  list(prefix: string): AsyncIterable<{ key: string; size: number }>;
}
