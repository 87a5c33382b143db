import type { ConnectionRecord, KeyValueRecord, SnapshotRecord, VolumeRecord } from "./records";

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
 * Where kindling keeps its records (cinderlib's persistence plugin contract). Getters return
 * copies; setters insert or replace by id and refuse a second volume (or snapshot) with the
 * same name on the same backend with a ConflictError; deletes of missing records succeed.
 */
export interface Persistence {
  readonly kind: string;
  getVolumes(filter?: VolumeFilter): Promise<VolumeRecord[]>;
  getSnapshots(filter?: SnapshotFilter): Promise<SnapshotRecord[]>;
  getConnections(filter?: ConnectionFilter): Promise<ConnectionRecord[]>;
  /** Without a key: every pair. */
  getKeyValues(key?: string): Promise<KeyValueRecord[]>;
  setVolume(volume: VolumeRecord): Promise<void>;
  setSnapshot(snapshot: SnapshotRecord): Promise<void>;
  setConnection(connection: ConnectionRecord): Promise<void>;
  setKeyValue(kv: KeyValueRecord): Promise<void>;
  deleteVolume(id: string): Promise<void>;
  deleteSnapshot(id: string): Promise<void>;
  deleteConnection(id: string): Promise<void>;
  deleteKeyValue(key: string): Promise<void>;
  /**
   * Sets `key` to `value` only if it now holds `expected` (undefined: only if absent), in one
   * atomic step; says whether it did. Locks (an NBD export's single writer) are built on it.
   */
  compareAndSetKeyValue(key: string, expected: string | undefined, value: string | undefined): Promise<boolean>;
  close(): Promise<void>;
}
