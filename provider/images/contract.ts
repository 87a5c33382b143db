import type { Readable } from "node:stream";

// The image service contract: what the image pipelines and the cache need from a catalogue of
// images (Glance v2 first), in kindling's words. One ImageService per configured service;
// clients map their service's answers and errors onto these types and provider/util/errors.

/** Glance's image statuses (its schema's enum). Only `active` images have data to read. */
export type ImageStatus = "queued" | "saving" | "active" | "killed" | "deleted" | "uploading" | "importing" | "pending_delete" | "deactivated";

/** private: the owner's project; shared: members too; community: anyone who asks; public: everyone (admins set it). */
export type Visibility = "private" | "shared" | "community" | "public";

/** Glance's disk formats. A declared format is a claim: kindling inspects the bytes itself. */
export type DiskFormat = "raw" | "qcow2" | "vmdk" | "vhd" | "vhdx" | "vdi" | "iso" | "ploop" | "aki" | "ari" | "ami";

export type ContainerFormat = "bare" | "ovf" | "ova" | "aki" | "ari" | "ami" | "docker" | "compressed";

export interface ImageLocation {
  url: string;
  metadata: Record<string, unknown>;
}

/** An image as the service describes it, normalised. */
export interface ImageRecord {
  id: string;
  name?: string;
  status: ImageStatus;
  diskFormat?: DiskFormat;
  containerFormat?: ContainerFormat;
  /** The stored bytes; unset until data is uploaded. */
  sizeBytes?: number;
  /** The disk's size when the service recognised the format: a hint to check early, never trusted. */
  virtualSizeBytes?: number;
  /** md5 of the stored bytes (Glance's `checksum`). */
  checksum?: string;
  /** The service's secure hash of the stored bytes (os_hash_algo, usually sha512, and os_hash_value). */
  hash?: { algo: string; value: string };
  minDiskGiB: number;
  minRamMiB: number;
  visibility: Visibility;
  protected: boolean;
  /** Left out of lists unless asked for (os_hidden). */
  hidden: boolean;
  /** The owning project, when the service has one. */
  owner?: string;
  tags: string[];
  /** Every field that is not one of the service's own: free-form, string-valued. */
  properties: Record<string, string>;
  /** Where the service keeps the data (file:///..., rbd://fsid/pool/image/snap), when it shows it. */
  directUrl?: string;
  /** Every place the data is kept, when the service shows them. */
  locations?: ImageLocation[];
  createdAt: string;
  updatedAt: string;
}

export interface NewImage {
  name: string;
  diskFormat: DiskFormat;
  /** bare unless said otherwise: kindling's images are disks, not containers. */
  containerFormat?: ContainerFormat;
  visibility?: Visibility;
  protected?: boolean;
  minDiskGiB?: number;
  minRamMiB?: number;
  tags?: string[];
  properties?: Record<string, string>;
}

export interface ImageQuery {
  name?: string;
  /** Every one of these tags. */
  tags?: string[];
  /** Every one of these properties, with these values. */
  properties?: Record<string, string>;
  status?: ImageStatus;
  visibility?: Visibility | "all";
  /** true: only hidden images (os_hidden); otherwise hidden ones are left out, as Glance does. */
  hidden?: boolean;
  /** At most this many (the most recent ones). */
  limit?: number;
}

export interface UploadOptions {
  /** The length the caller means to send: an upload of any other length is refused afterwards. */
  sizeBytes?: number;
  signal?: AbortSignal;
}

/** What an upload sent, as counted and hashed on the way out, checked against the service's record. */
export interface UploadResult {
  image: ImageRecord;
  sentBytes: number;
  md5: string;
  /** sha512 of the bytes sent (Glance's default os_hash_algo; compared when the service uses it). */
  hash: { algo: string; value: string };
}

export interface DownloadOptions {
  /** Resume from this byte (a Range request): the body holds the bytes from here to the end. */
  offset?: number;
  signal?: AbortSignal;
}

export interface Download {
  /** The bytes from `offset` to the end, streamed as the service sends them. */
  body: Readable;
  offset: number;
  /** How many bytes the body holds, when the service says. */
  length?: number;
  /** The whole image's size, when the service says. */
  totalBytes?: number;
  /** md5 of the whole image (Content-MD5), when the service sends it. */
  contentMd5?: string;
}

/** Changes to an image's metadata, sent as one JSON patch. Data never changes: images are immutable. */
export interface ImageUpdate {
  set?: {
    name?: string;
    visibility?: Visibility;
    protected?: boolean;
    minDiskGiB?: number;
    minRamMiB?: number;
    hidden?: boolean;
    /** Added, or replacing the value there. */
    properties?: Record<string, string>;
  };
  /** Properties to remove; one that is not there is no error. */
  remove?: string[];
  /** The whole list of tags, replacing the one there. */
  tags?: string[];
}

export interface ImageServiceCapabilities {
  /** The newest API version the service offers ("2.16"). */
  apiVersion: string;
  /** How images can be imported besides an upload (glance-direct, web-download, copy-image). */
  importMethods: string[];
  /** The named stores, when the service has several (multi-store); empty otherwise. */
  stores: string[];
  /**
   * Where locations can be read: `api`, the locations call (Glance 2.17+, a service role);
   * `record`, the image's own `locations` field (shown only when the operator enables it).
   */
  locations: "api" | "record";
}

export interface ImageService {
  /** The service's name in the configuration ("glance"). */
  readonly name: string;
  capabilities(): Promise<ImageServiceCapabilities>;
  /** NotFoundError when there is no such image (or it is not visible to this project). */
  show(id: string): Promise<ImageRecord>;
  /** The images that match, most recently created first. */
  find(query: ImageQuery): Promise<ImageRecord[]>;
  /** A new image with no data yet (status queued). */
  create(image: NewImage): Promise<ImageRecord>;
  /**
   * Streams `body` as the image's data (with backpressure, never held whole), then checks that
   * the image is active with the size and hashes of what was sent; refuses any difference.
   * An image takes data once: a second upload is a ConflictError.
   */
  upload(id: string, body: Readable, opts?: UploadOptions): Promise<UploadResult>;
  /** The image's data, whole or from an offset. An image with no data is a ConflictError. */
  download(id: string, opts?: DownloadOptions): Promise<Download>;
  update(id: string, changes: ImageUpdate): Promise<ImageRecord>;
  /** An image that is not there is deleted already; a protected one is refused (ConflictError). */
  delete(id: string): Promise<void>;
  /** Where the data is kept, when the service shows it (undefined when it does not). */
  locations(id: string): Promise<ImageLocation[] | undefined>;
  /** Lets go of kept-alive connections. */
  close(): void;
}
