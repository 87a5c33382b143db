import type { z } from "zod";

// The contract every backend implements, modelled on Cinder's volume driver (the operations)
// and nbdkit's plugins (small callbacks, capabilities declared rather than guessed).
// Drivers know nothing of persistence: they get what they need in these small shapes and
// return what they learned; the library keeps the records.

/** Key/value settings (Cinder's extra specs and QoS specs), as the records keep them. */
export type Specs = Record<string, string>;

/**
 * How a consumer reaches a volume, in Cinder's shape (what cinderlib, os-brick and Nova take):
 * `driver_volume_type` names the protocol, `data` holds the protocol's fields under the names
 * os-brick's connector for it reads, and kindling's own where they add something.
 */
export interface ConnectionInfo {
  /** local, nbd, rbd, iscsi. */
  driver_volume_type: string;
  data: Record<string, unknown>;
}

/**
 * Connection info as records written before it had Cinder's shape kept it (`protocol` in place
 * of `driver_volume_type`), or as it is now: always in the current shape.
 */
export function connectionInfoOf(value: unknown): ConnectionInfo {
  const v = (value ?? {}) as { driver_volume_type?: unknown; protocol?: unknown; data?: unknown };
  const type = typeof v.driver_volume_type === "string" ? v.driver_volume_type : typeof v.protocol === "string" ? v.protocol : "";
  const data = v.data && typeof v.data === "object" ? (v.data as Record<string, unknown>) : {};
  return { driver_volume_type: type, data };
}

export interface DriverVolume {
  id: string;
  pool: string;
  sizeGiB: number;
  extraSpecs: Specs;
  qosSpecs: Specs;
  /** The driver's own reference, as returned by an earlier call (file path, pool/image). */
  location?: string;
  /** Set for a clone: the volume it was cloned from (drivers that share data with it clean up). */
  sourceVolumeId?: string;
}

export interface DriverSnapshot {
  id: string;
  volumeId: string;
  volumeSizeGiB: number;
  pool: string;
  location?: string;
}

/** What a create-like call learned, stored by the library on the record. */
export interface ModelUpdate {
  location?: string;
}

export interface Progress {
  /** Bytes done and total bytes of a long copy. */
  done: number;
  total: number;
}

export interface OperationOptions {
  onProgress?: (p: Progress) => void;
}

export interface PoolStats {
  pool_name: string;
  total_capacity_gb: number | "unknown" | "infinite";
  free_capacity_gb: number | "unknown" | "infinite";
  reserved_percentage: number;
  thin_provisioning_support: boolean;
  thick_provisioning_support: boolean;
  max_over_subscription_ratio: number;
  provisioned_capacity_gb: number;
  allocated_capacity_gb?: number;
  total_volumes: number;
  QoS_support: boolean;
  online_extend_support: boolean;
  multiattach: boolean;
  [key: string]: unknown;
}

export interface BackendStats {
  volume_backend_name: string;
  vendor_name: string;
  driver_version: string;
  storage_protocol: string;
  total_capacity_gb: number | "unknown" | "infinite";
  free_capacity_gb: number | "unknown" | "infinite";
  reserved_percentage: number;
  thin_provisioning_support: boolean;
  max_over_subscription_ratio: number;
  provisioned_capacity_gb: number;
  pools: PoolStats[];
  [key: string]: unknown;
}

/** What the backend really holds, for refresh and drift: never what persistence remembers. */
export interface Inspection {
  exists: boolean;
  sizeBytes?: number;
  /** Size in whole GiB, rounded up (a volume grown by hand to 1.5 GiB reads as 2). */
  sizeGiB?: number;
  allocatedBytes?: number;
  location?: string;
  /** What else the storage says of it, in the driver's words (durability, the writer holding it). */
  details?: Record<string, string | number | boolean>;
}

export interface Extent {
  offset: number;
  length: number;
  /** A hole: reads as zeroes and takes no space. */
  hole: boolean;
  /** Reads as zeroes (a hole, or allocated zeroes). */
  zero: boolean;
}

export interface BlockDeviceCapabilities {
  canWrite: boolean;
  canFlush: boolean;
  canTrim: boolean;
  canZero: boolean;
  /** `extents` reports real allocation, not just "all data". */
  canExtents: boolean;
  /** Several opens of the same volume see one consistent view (NBD MULTI_CONN). */
  canMultiConn: boolean;
}

/**
 * What a device is underneath, for the NBD server's native data path:
 * - `file`: a file read and written by this descriptor (pread and pwrite, past the file's end
 *   reads as zeroes; fdatasync; fallocate for trim and zero; SEEK_DATA/SEEK_HOLE for its
 *   allocation). The device owns the descriptor.
 * - `rbd`: an RBD image, or a snapshot of it (read-only), that the server opens through librbd
 *   itself with this cluster's conf, user and key file; the device must not write to it
 *   meanwhile, so that two writers do not pass the image's exclusive lock back and forth.
 */
export type NativeTarget =
  | { kind: "file"; descriptor: number }
  | { kind: "rbd"; conf: string; user: string; keyFile?: string; timeoutSeconds: number; pool: string; image: string; snapshot?: string };

/**
 * Byte-level access to a volume or snapshot. The NBD server, image copies and downloads use only
 * this, so every backend gets them for free.
 */
export interface BlockDevice {
  /** The size the records hold for the volume or snapshot, not what the storage happens to have. */
  readonly size: number;
  readonly readOnly: boolean;
  readonly capabilities: BlockDeviceCapabilities;
  /**
   * Set only when the device is exactly what `native` names, read and written as that says and
   * nothing else: the NBD server then serves it from native threads that reach the storage
   * directly (provider/nbd/native), not through these methods. A wrapper that changes what any
   * method does must not pass it on.
   */
  readonly native?: NativeTarget;
  /**
   * Fills the whole buffer and returns its length, never a short count: what the storage does
   * not hold inside `size` (past a file's end) reads as zeroes, never as the buffer's old bytes.
   */
  pread(buffer: Buffer, offset: number): Promise<number>;
  /**
   * The buffer is the caller's again once the promise settles (the NBD server reuses it for the
   * next request): a device that keeps the bytes past that keeps a copy.
   */
  pwrite(buffer: Buffer, offset: number, opts?: { fua?: boolean }): Promise<void>;
  flush(): Promise<void>;
  /** Discard: the range may read back as zeroes afterwards. */
  trim(offset: number, length: number): Promise<void>;
  /** The range reads back as zeroes afterwards; `mayTrim` allows punching a hole for it. */
  zero(offset: number, length: number, opts?: { mayTrim?: boolean }): Promise<void>;
  /** Allocation of [offset, offset+length), in order, covering the whole range. */
  extents(offset: number, length: number): Promise<Extent[]>;
  close(): Promise<void>;
}

export type OpenTarget = { kind: "volume"; volume: DriverVolume } | { kind: "snapshot"; snapshot: DriverSnapshot };

export interface VolumeDriver {
  /** The driver's kind, as in config: "file", "rbd". */
  readonly driverName: string;
  /** The backend's name (volume_backend_name). */
  readonly backendName: string;
  /** Protocols `initializeConnection` accepts. */
  readonly protocols: readonly string[];
  /**
   * The protocol `Volume.attach()` asks for to get a device on this host ("local" for files,
   * "rbd" for Ceph). Without one, attach goes over kindling's NBD server.
   */
  readonly attachProtocol?: string;
  /**
   * A clone shares nothing with its source (the file driver's reflinks and copies), so the
   * source may go while clones stay. Unset: clones may depend on their source (rbd, object).
   */
  readonly independentClones?: boolean;

  /** One-time start-up: check the config against reality (directories, credentials). */
  setup(): Promise<void>;
  poolNames(): string[];
  defaultPool(): string;
  stats(): Promise<BackendStats>;

  /** Checks before anything is created; they throw InvalidInputError naming the field. */
  validateExtraSpecs(specs: Specs): void;
  validateQosSpecs(specs: Specs): void;
  /**
   * Enforces new QoS specs on an existing volume (`volume.qosSpecs` holds the old ones). Drivers
   * whose limits live in the storage implement it; others only keep the specs in the record.
   */
  applyQos?(volume: DriverVolume, qosSpecs: Specs): Promise<void>;
  /** The largest volume the pool can ever hold, in GiB. */
  maxSizeGiB(pool: string): Promise<number>;

  createVolume(volume: DriverVolume, opts?: OperationOptions): Promise<ModelUpdate>;
  /** A missing volume is success. */
  deleteVolume(volume: DriverVolume): Promise<void>;
  /**
   * Grow only; the library has already refused a shrink. `volume.sizeGiB` is the size the
   * records hold (the old size). Idempotent: a re-run after an interrupted extend (the storage
   * already at the new size) finishes it, thick provisioning included. On failure, only what
   * this call added is given back.
   */
  extendVolume(volume: DriverVolume, newSizeGiB: number): Promise<void>;
  cloneVolume(volume: DriverVolume, source: DriverVolume, opts?: OperationOptions): Promise<ModelUpdate>;
  createSnapshot(snapshot: DriverSnapshot, volume: DriverVolume, opts?: OperationOptions): Promise<ModelUpdate>;
  /** A missing snapshot is success. */
  deleteSnapshot(snapshot: DriverSnapshot): Promise<void>;
  createVolumeFromSnapshot(volume: DriverVolume, snapshot: DriverSnapshot, opts?: OperationOptions): Promise<ModelUpdate>;
  /**
   * Optional: the new volume made from where an image service keeps an image's bytes (Glance's
   * direct_url or one of its locations) without copying them, as a copy-on-write clone (rbd:
   * `rbd://FSID/POOL/IMAGE/SNAP` of this backend's own cluster), grown to `volume.sizeGiB`.
   * Undefined, with nothing made, when this driver cannot reach that location so; the caller
   * then copies the bytes. It never changes the image service's data, and checks no bytes: the
   * caller verifies the clone. On failure nothing is left.
   */
  cloneFromLocation?(volume: DriverVolume, location: string, opts?: OperationOptions): Promise<ModelUpdate | undefined>;

  inspect(volume: DriverVolume): Promise<Inspection>;
  inspectSnapshot(snapshot: DriverSnapshot): Promise<Inspection>;

  /** Throws InvalidInputError naming the connector field at fault. */
  validateConnector(protocol: string, connector: Record<string, unknown>): void;
  initializeConnection(
    volume: DriverVolume,
    protocol: string,
    connector: Record<string, unknown>,
    /** connectionId: the connection's id, for credentials made for it alone. */
    opts: { attachMode: "rw" | "ro"; connectionId?: string },
  ): Promise<ConnectionInfo>;
  /** `info`: what `initializeConnection` gave (credentials made for the connection go with it). */
  terminateConnection(volume: DriverVolume, protocol: string, connector: Record<string, unknown>, info?: ConnectionInfo): Promise<void>;
  /**
   * Secrets the driver puts in `info` (the RBD key and keyring), by field of `data`. The library
   * keeps them out of its records ("[secret]" there) and puts them back from here on use.
   */
  connectionSecrets?(info: ConnectionInfo): Record<string, string>;

  /** A device of the size the records hold (`sizeGiB`, a snapshot's `volumeSizeGiB`). */
  open(target: OpenTarget, opts: { readOnly: boolean }): Promise<BlockDevice>;

  /**
   * Optional: how qemu-img reaches the volume or snapshot itself, as a raw image, with no NBD
   * server of kindling's in between (a pool file handed over open, an rbd image). Drivers
   * without it are served to qemu-img over NBD from their BlockDevice.
   */
  qemuAccess?(target: OpenTarget, opts: { readOnly: boolean }): Promise<QemuAccess>;

  /**
   * Drivers whose storage itself enforces one writer per volume (object: a lease in the store)
   * hold that lock by hand for `kindling volume lock` until `unlockVolume`; `holder` says who, for
   * the error a refused writer gets. Refused (InUseError) while another holds it.
   */
  lockVolume?(volume: DriverVolume, holder: string): Promise<void>;
  /** Releases a lock `lockVolume` took; `force` releases whoever holds it (a writer that died elsewhere). */
  unlockVolume?(volume: DriverVolume, opts: { force: boolean }): Promise<void>;

  /** Releases what setup made (credential files); the backend calls it on close. */
  close?(): void;
}

/**
 * What qemu-img is given to reach a volume or snapshot: the `file.*` options of a raw image
 * (`--image-opts` / `--target-image-opts`), secret objects it reads from files, and
 * descriptors the child inherits (from fd 3 on, in order) that the options name as /dev/fd/N.
 */
export interface QemuAccess {
  /** The protocol layer under `driver=raw`: `{ driver: "file", filename: "/dev/fd/3" }`. */
  file: Record<string, string>;
  /** `--object` values (`secret,id=...,file=...`): how secrets reach qemu-img, never as values here. */
  objects?: string[];
  fds?: number[];
  /** Releases what the access holds (the descriptors); after qemu-img has exited. */
  close(): Promise<void>;
}

/** How a driver registers itself: its config schema and a factory. */
export interface DriverModule<Config> {
  driverName: string;
  /** Strict: unknown keys are errors, not warnings. Secret fields are listed in `secretFields`. */
  configSchema: z.ZodType<Config>;
  secretFields: readonly string[];
  /** Settings that are file paths (or maps of them): relative ones resolve against the config file. */
  pathFields: readonly string[];
  /** Settings that say which storage this is: changing one means other volumes, not new settings. */
  identityFields: readonly string[];
  create(backendName: string, config: Config): VolumeDriver;
  /** Where this backend keeps its records when the config names no persistence. */
  defaultPersistencePath(config: Config, backendName: string): string;
}
