import type { ConnectionFilter, Persistence, SnapshotFilter, VolumeFilter } from "./contract";
import { versionOf, type ConnectionRecord, type KeyValueRecord, type RecordKind, type RecordTypes, type SnapshotRecord, type VolumeRecord } from "./records";
import { assertUniqueName, compareAndSetAllowed, copy, matches } from "./shared";

type Stored = VolumeRecord | SnapshotRecord | ConnectionRecord;

/**
 * Records in this process only. This is the stateless mode: the caller keeps `dump()` output
 * (Pulumi state does) and `load()`s it back. Unlike cinderlib, each instance has its own maps,
 * so two stateless users in one process never see each other's records. Compare-and-set is
 * atomic because each call does its work without yielding.
 */
export class MemoryPersistence implements Persistence {
  readonly kind = "memory";
  readonly scope = "process" as const;
  readonly location = "memory";
  private readonly tables: Record<RecordKind, Map<string, Stored>> = { volume: new Map(), snapshot: new Map(), connection: new Map() };
  private readonly keyValues = new Map<string, string>();

  private list<T extends Stored>(kind: RecordKind, filter: object): T[] {
    return [...this.tables[kind].values()].filter((r) => matches(r, filter)).map((r) => copy(r as T));
  }

  async getVolumes(filter: VolumeFilter = {}): Promise<VolumeRecord[]> {
    return this.list("volume", filter);
  }
  async getSnapshots(filter: SnapshotFilter = {}): Promise<SnapshotRecord[]> {
    return this.list("snapshot", filter);
  }
  async getConnections(filter: ConnectionFilter = {}): Promise<ConnectionRecord[]> {
    return this.list("connection", filter);
  }
  async getKeyValues(key?: string): Promise<KeyValueRecord[]> {
    return [...this.keyValues.entries()]
      .filter(([k]) => key === undefined || k === key)
      .map(([k, value]) => ({ key: k, value }));
  }

  async compareAndSetRecord<K extends RecordKind>(kind: K, record: RecordTypes[K], expected: number): Promise<boolean> {
    const table = this.tables[kind];
    const named = (r: Stored) => ({ id: r.id, backend: r.backend, name: "name" in r ? r.name : r.id, version: r.version });
    const current = table.get(record.id);
    if (!compareAndSetAllowed(kind, named(record), expected, current && named(current), () => [...table.values()].map(named))) return false;
    table.set(record.id, copy(record));
    return true;
  }
  async compareAndDeleteRecord(kind: RecordKind, id: string, expected: number): Promise<boolean> {
    const current = this.tables[kind].get(id);
    if (!current || versionOf(current) !== expected) return false;
    this.tables[kind].delete(id);
    return true;
  }

  async setVolume(volume: VolumeRecord): Promise<void> {
    assertUniqueName("volume", volume, this.tables.volume.values() as Iterable<VolumeRecord>);
    this.tables.volume.set(volume.id, copy(volume));
  }
  async setSnapshot(snapshot: SnapshotRecord): Promise<void> {
    assertUniqueName("snapshot", snapshot, this.tables.snapshot.values() as Iterable<SnapshotRecord>);
    this.tables.snapshot.set(snapshot.id, copy(snapshot));
  }
  async setConnection(connection: ConnectionRecord): Promise<void> {
    this.tables.connection.set(connection.id, copy(connection));
  }
  async setKeyValue(kv: KeyValueRecord): Promise<void> {
    this.keyValues.set(kv.key, kv.value);
  }
  async deleteVolume(id: string): Promise<void> {
    this.tables.volume.delete(id);
  }
  async deleteSnapshot(id: string): Promise<void> {
    this.tables.snapshot.delete(id);
  }
  async deleteConnection(id: string): Promise<void> {
    this.tables.connection.delete(id);
  }
  async deleteKeyValue(key: string): Promise<void> {
    this.keyValues.delete(key);
  }
  async compareAndSetKeyValue(key: string, expected: string | undefined, value: string | undefined): Promise<boolean> {
    if (this.keyValues.get(key) !== expected) return false;
    if (value === undefined) this.keyValues.delete(key);
    else this.keyValues.set(key, value);
    return true;
  }
  async close(): Promise<void> {}
}
