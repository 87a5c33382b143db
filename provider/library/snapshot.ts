import type { BlockDevice, DriverSnapshot, Inspection, Progress } from "../drivers/contract";
import type { ImageProvenance, Lease, SnapshotRecord, SnapshotStatus, VolumeRecord } from "../persistence/records";
import { InUseError, InvalidInputError, KindlingError, NotFoundError } from "../util/errors";
import { newId, now } from "../util/ids";
import { parseInput } from "../util/validate";
import { liveClaims } from "./export-claims";
import { describeProcess } from "../util/owner";
import { Tracked } from "./tracked";
import type { Backend } from "./backend";
import { updateSnapshotSchema, volumeFromSnapshotSchema, type CreateSnapshotOptions, type UpdateSnapshotOptions, type VolumeFromSnapshotOptions } from "./schemas";
import { Volume } from "./volume";
import { Connection } from "./connection";
import { checkDownloadTarget, writeImage, type DownloadOptions, type DownloadResult } from "./download";
import type { ImageService, UploadResult } from "../images/contract";
import type { CopyToImageOptions } from "./images";

// Image copies load the image pipeline when one is made, not with every snapshot.
const imagesModule = () => require("./images") as typeof import("./images");
const qemuEndpointModule = () => require("../images/qemu-endpoint") as typeof import("../images/qemu-endpoint");

type ProgressOpts = { onProgress?: (p: Progress) => void };

/** A point-in-time copy of a volume (cinderlib's Snapshot). Operations hold its lease, as volumes' do. */
export class Snapshot extends Tracked<"snapshot"> {
  protected readonly kind = "snapshot";

  constructor(backend: Backend, record: SnapshotRecord) {
    super(backend, record);
  }

  get name(): string { return this.record.name; }
  get description(): string { return this.record.description; }
  get volumeId(): string { return this.record.volumeId; }
  get volumeSizeGiB(): number { return this.record.volumeSizeGiB; }
  get status(): SnapshotStatus { return this.record.status; }
  get pool(): string { return this.record.pool; }
  get metadata(): Record<string, string> { return { ...this.record.metadata }; }
  /** The volume's image provenance when the snapshot was taken. */
  get image(): ImageProvenance | undefined { return this.record.image && structuredClone(this.record.image); }
  get location(): string | undefined { return this.record.location; }
  get createdAt(): string { return this.record.createdAt; }
  get deleted(): boolean { return this.record.status === "deleted"; }
  get gone(): boolean { return this.deleted; }

  protected describe(): string {
    return `snapshot ${this.name}`;
  }
  protected notFound(): KindlingError {
    return new NotFoundError("snapshot", this.name === this.id ? this.id : this.name, { hint: "it was deleted" });
  }
  protected interrupted(record: SnapshotRecord): boolean {
    return record.status === "creating" || record.status === "deleting";
  }
  protected markGone(): void {
    this.record = { ...this.record, status: "deleted", lease: undefined };
  }

  toDriver(): DriverSnapshot {
    const r = this.record;
    return { id: r.id, volumeId: r.volumeId, volumeSizeGiB: r.volumeSizeGiB, pool: r.pool, location: r.location };
  }

  /** Takes a snapshot of `volume` (the caller holds the volume's lease). Same rollback as volumes. */
  static async build(volume: Volume, input: CreateSnapshotOptions, opts: ProgressOpts): Promise<Snapshot> {
    const backend = volume.backend;
    const id = input.id ?? newId();
    const record: SnapshotRecord = {
      class: "Snapshot",
      id,
      name: input.name ?? id,
      description: input.description ?? "",
      backend: backend.name,
      volumeId: volume.id,
      volumeSizeGiB: volume.sizeGiB,
      pool: volume.pool,
      status: "creating",
      metadata: input.metadata ?? {},
      ...(volume.image ? { image: volume.image } : {}),
      createdAt: now(),
      updatedAt: now(),
    };
    const snapshot = new Snapshot(backend, record);
    await snapshot.make(
      () => backend.driver.createSnapshot(snapshot.toDriver(), volume.toDriver(), backend.progressFor("snapshot", id, opts.onProgress)),
      () => backend.driver.inspectSnapshot(snapshot.toDriver()),
    );
    return snapshot;
  }

  /** A snapshot whose creation or deletion a crash interrupted is removed: it was never whole. */
  protected async repair(previous: SnapshotRecord, _lease: Lease | undefined): Promise<"kept" | "gone"> {
    if (previous.status === "creating" || previous.status === "deleting") {
      await this.backend.driver.deleteSnapshot(this.toDriver());
      await this.forget();
      return "gone";
    }
    return "kept";
  }

  async save(): Promise<void> {
    await this.backend.persistence.setSnapshot(this.record);
  }

  async volume(): Promise<Volume> {
    return this.backend.getVolume(this.volumeId);
  }

  /** Exports the snapshot read-only over nbd (served by `kindling nbd serve`). */
  async connect(protocol: string, connector: Record<string, unknown> = {}): Promise<Connection> {
    this.backend.validateConnector(protocol, connector);
    return this.leased("connect", async () => Connection.buildForSnapshot(this, protocol, connector));
  }

  async connections(): Promise<Connection[]> {
    return (await this.backend.connections(this.volumeId)).filter((c) => c.snapshotId === this.id);
  }

  async disconnect(): Promise<void> {
    for (const connection of await this.connections()) await connection.disconnect();
  }

  /** Deletes the snapshot (refused while exported); deleting twice is fine. */
  async delete(): Promise<void> {
    await this.leased("delete", async () => {
      const exported = await this.connections();
      if (exported.length) throw new InUseError(`snapshot ${this.name} is exported (${exported.map((c) => c.protocol).join(", ")})`, { hint: "disconnect it first" });
      const served = await liveClaims(this.backend.persistence, { snapshotId: this.id });
      if (served.length) {
        throw new InUseError(`snapshot ${this.name} is still served over NBD by ${served.map((c) => describeProcess(c.owner)).join(", ")}`, {
          hint: "its server closes the export within a second of `kindling disconnect`; try again then",
        });
      }
      const previous = this.status;
      await this.change({ status: "deleting" });
      try {
        await this.backend.driver.deleteSnapshot(this.toDriver());
      } catch (err) {
        // A refusal (clones depend on it, something holds it open) changed nothing: the object
        // stays usable. Anything else may have removed part of it.
        const refused = err instanceof KindlingError && err.code === "IN_USE";
        await this.change({ status: refused ? previous : "error_deleting" });
        throw err;
      }
      await this.forget();
    }, { ifGone: () => undefined, freeing: true });
  }

  /** A new volume holding the data as it was when the snapshot was taken. */
  async createVolume(options: VolumeFromSnapshotOptions = {}, opts: ProgressOpts = {}): Promise<Volume> {
    const input = parseInput(volumeFromSnapshotSchema, options);
    return this.leased("create-volume", async () => {
      if (this.status !== "available") throw new InvalidInputError("snapshot", `snapshot ${this.name} is ${this.status}, not available`);
      const sizeGiB = input.sizeGiB ?? this.volumeSizeGiB;
      if (sizeGiB < this.volumeSizeGiB) throw new InvalidInputError("sizeGiB", `must be at least the snapshot's size (${this.volumeSizeGiB} GiB)`);
      await this.backend.checkPlacement(this.pool, sizeGiB);
      // The new volume takes the parent's specs, as cinderlib does.
      const [parent] = await this.backend.persistence.getVolumes({ id: this.volumeId });
      const id = input.id ?? newId();
      const record: VolumeRecord = {
        class: "Volume",
        id,
        name: input.name ?? id,
        description: input.description ?? "",
        backend: this.backend.name,
        pool: this.pool,
        sizeGiB,
        status: "creating",
        extraSpecs: { ...(parent?.extraSpecs ?? {}) },
        qosSpecs: { ...(parent?.qosSpecs ?? {}) },
        metadata: input.metadata ?? {},
        snapshotId: this.id,
        ...(this.record.image ? { image: this.record.image } : {}),
        createdAt: now(),
        updatedAt: now(),
      };
      const source = this.toDriver();
      return Volume.build(this.backend, record, (v) =>
        this.backend.driver.createVolumeFromSnapshot(v, source, this.backend.progressFor("create-from-snapshot", id, opts.onProgress)));
    });
  }

  /** Changes the name, description or metadata; the data never changes. */
  async update(options: UpdateSnapshotOptions): Promise<void> {
    const input = parseInput(updateSnapshotSchema, options);
    await this.leased("update", () => this.change(Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) as Partial<SnapshotRecord>));
  }

  async inspect(): Promise<Inspection> {
    return this.backend.driver.inspectSnapshot(this.toDriver());
  }

  /** Read-only byte access to the snapshot's data (once it is whole). */
  async open(): Promise<BlockDevice> {
    if (this.status !== "available") throw new InvalidInputError("snapshot", `snapshot ${this.name} is ${this.status}, not available; it cannot be opened`);
    return this.backend.driver.open({ kind: "snapshot", snapshot: this.toDriver() }, { readOnly: true });
  }

  /**
   * Writes the snapshot's data to `file` as a sparse raw image (see download.ts). A snapshot
   * never changes, so no writer lock is needed: this works while the volume is exported
   * read-write or locked by hand.
   */
  async download(file: string, opts: DownloadOptions = {}): Promise<DownloadResult> {
    await checkDownloadTarget(file, opts.force);
    await this.refresh();
    if (this.gone) throw this.notFound();
    const device = await this.open();
    try {
      return await writeImage(device, file, { ...opts, ...this.backend.progressFor("download", this.id, opts.onProgress) });
    } finally {
      await device.close();
    }
  }

  /**
   * A new image in `service` with the snapshot's bytes, in `options.diskFormat` (raw by
   * default: streamed straight from the storage, no temp file; others made by qemu-img in a
   * staging file), no writer lock needed: a snapshot never changes. It carries the snapshot's
   * metadata and where it came from (`kindling_snapshot_id`, `kindling_volume_id`).
   */
  async copyToImage(service: ImageService, options: CopyToImageOptions, opts: ProgressOpts = {}): Promise<UploadResult> {
    await this.refresh();
    if (this.gone) throw this.notFound();
    const properties = { ...this.metadata, kindling_snapshot_id: this.id, kindling_volume_id: this.volumeId };
    return this.copyBytesToImage(service, options, { what: `snapshot ${this.name}`, properties, progressId: this.id, onProgress: opts.onProgress });
  }

  /** @internal The image copy itself, under the name and properties of whoever asked (a volume copies through a temporary snapshot). */
  async copyBytesToImage(service: ImageService, options: CopyToImageOptions, as: { what: string; properties: Record<string, string>; progressId: string; onProgress?: (p: Progress) => void }): Promise<UploadResult> {
    const target = { kind: "snapshot" as const, snapshot: this.toDriver() };
    return imagesModule().copyStorageToImage({
      what: as.what, sizeGiB: this.volumeSizeGiB, properties: as.properties,
      open: () => this.open(),
      endpoint: async () => {
        if (this.status !== "available") throw new InvalidInputError("snapshot", `snapshot ${this.name} is ${this.status}, not available; it cannot be read`);
        return qemuEndpointModule().qemuEndpoint(this.backend.driver, target, { readOnly: true });
      },
    }, service, options, this.backend.progressFor("copy-to-image", as.progressId, as.onProgress).onProgress);
  }

  /** The record as plain JSON (what persistence stores and Pulumi state carries). */
  dump(): SnapshotRecord {
    return JSON.parse(JSON.stringify(this.record)) as SnapshotRecord;
  }

  static load(backend: Backend, record: SnapshotRecord): Snapshot {
    if (record?.class !== "Snapshot") throw new InvalidInputError("class", "not a Snapshot record");
    return new Snapshot(backend, structuredClone(record));
  }

  toJSON(): SnapshotRecord {
    return this.dump();
  }
}
