import type { ConnectionInfo, Specs } from "../drivers/contract";
import type { ProcessIdentity } from "../util/owner";

// The records kindling keeps about what it manages. They are plain JSON: this is the form
// `dump()` returns, what every persistence plugin stores, and what Pulumi state carries.

/**
 * Who runs a long operation on an object right now. Taken and given back by compare-and-set
 * on the record's version, so across processes (and hosts, with a shared store) only one
 * holder runs at a time; a lease whose owner died, or whose heartbeat stopped, is taken over
 * and the interrupted operation repaired from what the backend really holds.
 */
export interface Lease {
  /** New for every lease: tells this holder from another handle in the same process. */
  token: string;
  owner: ProcessIdentity;
  /** What the holder does: create, extend, delete, snapshot, clone, connect, attach... */
  operation: string;
  /** What a repair needs to finish the operation (an extend's target size). */
  intent?: Record<string, unknown>;
  takenAt: string;
  /** Renewed while the operation runs. */
  heartbeat: string;
}

/** Fields every stored record has besides its own. */
export interface Versioned {
  /**
   * Goes up by one with every change. Records written by kindling before versions existed
   * have none and count as version 1.
   */
  version?: number;
  lease?: Lease;
}

export const VOLUME_STATUSES = [
  "creating", "available", "in-use", "extending", "deleting", "error", "error_deleting", "deleted",
] as const;
export type VolumeStatus = (typeof VOLUME_STATUSES)[number];

export const SNAPSHOT_STATUSES = ["creating", "available", "deleting", "error", "error_deleting", "deleted"] as const;
export type SnapshotStatus = (typeof SNAPSHOT_STATUSES)[number];

// Specs and ConnectionInfo are the driver contract's shapes (drivers take the one and return
// the other, and sit below persistence); the records carry them as they are.
export type { ConnectionInfo, Specs } from "../drivers/contract";

/**
 * Where a volume's first bytes came from, when it was made from an image: Cinder's
 * volume_glance_metadata and more (the digests kindling verified, the format it found). A
 * snapshot and every volume made from either carry it on.
 */
export interface ImageProvenance {
  /** glance: an image service's image; url: an http(s) URL; file: a local file. */
  kind: "glance" | "url" | "file";
  /** The image service's name in the configuration (glance). */
  service?: string;
  imageId?: string;
  imageName?: string;
  /** The URL without credentials or query, or the file's path. */
  location?: string;
  /** What the source declared (disk_format, container_format) and what kindling detected. */
  declaredFormat?: string;
  containerFormat?: string;
  detectedFormat: string;
  /** Set when the source's bytes were compressed (gzip, xz, zstd, bzip2) around that format. */
  compression?: string;
  /** The source's bytes (when it said beforehand), and the disk they hold. */
  sizeBytes?: number;
  virtualSizeBytes: number;
  minDiskGiB?: number;
  minRamMiB?: number;
  /** Every digest of the source's bytes that was checked as they arrived (algo: hex). */
  digests: Record<string, string>;
  /** The image's own properties (Glance's free-form ones), as Cinder copies them. */
  properties: Record<string, string>;
  /**
   * Set when the volume is a copy-on-write clone of where the service keeps the image (an
   * rbd://FSID/POOL/IMAGE/SNAP), not a copy: its data depends on that snapshot.
   */
  clonedFrom?: string;
  copiedAt: string;
}

export interface VolumeRecord extends Versioned {
  class: "Volume";
  id: string;
  name: string;
  description: string;
  backend: string;
  pool: string;
  sizeGiB: number;
  status: VolumeStatus;
  /** Status to return to after a transient one (extending) or on a retried operation. */
  previousStatus?: VolumeStatus;
  extraSpecs: Specs;
  qosSpecs: Specs;
  metadata: Record<string, string>;
  /** Set when the volume is a clone. */
  sourceVolumeId?: string;
  /** Set when the volume was created from a snapshot. */
  snapshotId?: string;
  /** Set when the volume (or the volume it was cloned or snapshotted from) was made from an image. */
  image?: ImageProvenance;
  /** Where the driver keeps it (a file path, pool/image): the driver's own reference. */
  location?: string;
  createdAt: string;
  updatedAt: string;
}

export interface SnapshotRecord extends Versioned {
  class: "Snapshot";
  id: string;
  name: string;
  description: string;
  backend: string;
  volumeId: string;
  volumeSizeGiB: number;
  pool: string;
  status: SnapshotStatus;
  metadata: Record<string, string>;
  /** The volume's image provenance when the snapshot was taken. */
  image?: ImageProvenance;
  location?: string;
  createdAt: string;
  updatedAt: string;
}

export interface ConnectionRecord extends Versioned {
  class: "Connection";
  id: string;
  backend: string;
  volumeId: string;
  /** Set when what is connected is a snapshot of the volume (always read-only). */
  snapshotId?: string;
  protocol: string;
  connector: Record<string, unknown>;
  connectionInfo: ConnectionInfo;
  attachMode: "rw" | "ro";
  /** The block device on this host when locally attached (e.g. /dev/loop3). */
  devicePath?: string;
  attachedHost?: string;
  createdAt: string;
  updatedAt: string;
}

export interface KeyValueRecord {
  key: string;
  value: string;
}

export type AnyRecord = VolumeRecord | SnapshotRecord | ConnectionRecord;

export type RecordKind = "volume" | "snapshot" | "connection";

export interface RecordTypes {
  volume: VolumeRecord;
  snapshot: SnapshotRecord;
  connection: ConnectionRecord;
}

/** The version a stored record is at (records from before versions count as 1). */
export function versionOf(record: Versioned): number {
  return record.version ?? 1;
}
