import { versionOf, type ConnectionRecord, type RecordKind, type RecordTypes, type SnapshotRecord, type VolumeRecord } from "../records";

export const TABLES: Record<RecordKind, string> = { volume: "volumes", snapshot: "snapshots", connection: "connections" };

/** The columns a record is stored with in every SQL store, besides its JSON. */
export function recordColumns<K extends RecordKind>(kind: K, record: RecordTypes[K]): Record<string, string | number> {
  const base = { id: record.id, backend: record.backend, doc: JSON.stringify(record), version: versionOf(record) };
  if (kind === "volume") return { ...base, name: (record as VolumeRecord).name };
  if (kind === "snapshot") return { ...base, name: (record as SnapshotRecord).name, volume_id: (record as SnapshotRecord).volumeId };
  return { ...base, volume_id: (record as ConnectionRecord).volumeId };
}
