import type { ConnectionRecord, KeyValueRecord, RecordKind, RecordTypes, SnapshotRecord, VolumeRecord } from "./records";

export interface VolumeFilter {
  id?: string;
  name?: string;
  backend?: string;
}

export interface SnapshotFilter {
  id?: string;
  name?: string;
  volumeId?: string;
  backend?: string;
}

export interface ConnectionFilter {
  id?: string;
  volumeId?: string;
  backend?: string;
}

/**
 * How far a store's guarantees reach: within one process (memory), among the processes of one
 * host (sqlite, json on a local disk), or among hosts (a database server).
 */
export type StoreScope = "process" | "host" | "hosts";

/**
 * Where kindling keeps its records (cinderlib's persistence plugin contract). Getters return
 * copies. Several processes (the command, the NBD daemon, Pulumi's provider, a user's
 * program) share one store, so the library changes records only through the two
 * compare-and-set calls: every change is conditional on the version it read, and per-object
 * leases (the record's `lease` field) are taken and given back through them.
 */
export interface Persistence {
  readonly kind: string;
  /** Where the records are (a path, a URL without credentials), for messages. */
  readonly location: string;
  readonly scope: StoreScope;
  getVolumes(filter?: VolumeFilter): Promise<VolumeRecord[]>;
  getSnapshots(filter?: SnapshotFilter): Promise<SnapshotRecord[]>;
  getConnections(filter?: ConnectionFilter): Promise<ConnectionRecord[]>;
  /** Without a key: every pair. */
  getKeyValues(key?: string): Promise<KeyValueRecord[]>;

  /**
   * Writes `record` only if the stored record with its id is at version `expected` (0: only if
   * there is none), in one atomic step, and says whether it did. The caller sets
   * `record.version` to `expected + 1`. A name another volume (or snapshot) of the same
   * backend holds is a ConflictError; it is checked when the record is new or its name
   * changes, never on other changes, so two records that clash (left by an older store) can
   * still be moved to "deleting" and deleted.
   */
  compareAndSetRecord<K extends RecordKind>(kind: K, record: RecordTypes[K], expected: number): Promise<boolean>;
  /** Deletes the record only if it is at version `expected`; false when it is not, or is gone. */
  compareAndDeleteRecord(kind: RecordKind, id: string, expected: number): Promise<boolean>;
  /**
   * Sets `key` to `value` only if it now holds `expected` (undefined: only if absent), in one
   * atomic step; says whether it did. NBD writer locks and export claims are built on it.
   */
  compareAndSetKeyValue(key: string, expected: string | undefined, value: string | undefined): Promise<boolean>;

  /**
   * Unconditional writes, for restoring records (`load(..., { save: true })`) and for plugins'
   * own tools: they replace by id whatever is stored. Name uniqueness still holds.
   */
  setVolume(volume: VolumeRecord): Promise<void>;
  setSnapshot(snapshot: SnapshotRecord): Promise<void>;
  setConnection(connection: ConnectionRecord): Promise<void>;
  setKeyValue(kv: KeyValueRecord): Promise<void>;
  /** Deletes of missing records succeed. */
  deleteVolume(id: string): Promise<void>;
  deleteSnapshot(id: string): Promise<void>;
  deleteConnection(id: string): Promise<void>;
  deleteKeyValue(key: string): Promise<void>;

  /**
   * Optional. A store on a filesystem keeps a little space in reserve: when that filesystem is
   * full, a change that frees space (a delete) gives the reserve back so it can still be
   * recorded. True when there was a reserve to give.
   */
  releaseReserve?(): Promise<boolean>;
  /** Optional. Puts the reserve back where space allows (after a delete freed some). */
  restoreReserve?(): Promise<void>;
  close(): Promise<void>;
}
