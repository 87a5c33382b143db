import type { ConnectionFilter, Persistence, SnapshotFilter, VolumeFilter } from "./contract";
import type { ConnectionRecord, KeyValueRecord, SnapshotRecord, VolumeRecord } from "./records";
import { assertUniqueName, copy, matches } from "./shared";

/**
 * Records in this process only. This is the stateless mode: the caller keeps `dump()` output
 * (Pulumi state does) and `load()`s it back. Unlike cinderlib, each instance has its own maps,
 * so two stateless users in one process never see each other's records.
 */
export class MemoryPersistence implements Persistence {
  readonly kind = "memory";
  private readonly volumes = new Map<string, VolumeRecord>();
  private readonly snapshots = new Map<string, SnapshotRecord>();
  private readonly connections = new Map<string, ConnectionRecord>();
  private readonly keyValues = new Map<string, string>();

  async getVolumes(filter: VolumeFilter = {}): Promise<VolumeRecord[]> {
    return [...this.volumes.values()].filter((v) => matches(v, filter)).map(copy);
  }
  async getSnapshots(filter: SnapshotFilter = {}): Promise<SnapshotRecord[]> {
    return [...this.snapshots.values()].filter((s) => matches(s, filter)).map(copy);
  }
  async getConnections(filter: ConnectionFilter = {}): Promise<ConnectionRecord[]> {
    return [...this.connections.values()].filter((c) => matches(c, filter)).map(copy);
  }
  async getKeyValues(key?: string): Promise<KeyValueRecord[]> {
    return [...this.keyValues.entries()]
      .filter(([k]) => key === undefined || k === key)
      .map(([k, value]) => ({ key: k, value }));
  }
  async setVolume(volume: VolumeRecord): Promise<void> {
    assertUniqueName("volume", volume, this.volumes.values());
    this.volumes.set(volume.id, copy(volume));
  }
  async setSnapshot(snapshot: SnapshotRecord): Promise<void> {
    assertUniqueName("snapshot", snapshot, this.snapshots.values());
    this.snapshots.set(snapshot.id, copy(snapshot));
  }
  async setConnection(connection: ConnectionRecord): Promise<void> {
    this.connections.set(connection.id, copy(connection));
  }
  async setKeyValue(kv: KeyValueRecord): Promise<void> {
    this.keyValues.set(kv.key, kv.value);
  }
  async deleteVolume(id: string): Promise<void> {
    this.volumes.delete(id);
  }
  async deleteSnapshot(id: string): Promise<void> {
    this.snapshots.delete(id);
  }
  async deleteConnection(id: string): Promise<void> {
    this.connections.delete(id);
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
