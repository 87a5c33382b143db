// kindling/library: the cinderlib-like object API, importable on its own.
export { Backend, type BackendConfig, type BackendOptions, type BackendDump, type ProgressEvent } from "./backend";
export { Volume } from "./volume";
export { Snapshot } from "./snapshot";
export { Connection } from "./connection";
export type { DownloadOptions, DownloadResult } from "./download";
export type { WriterHolder, HandHolder, WriterPurpose } from "./export-claims";
export { loadConfig, openBackends, BackendSet, defaultConfig, dataHome, configFileSchema, type ConfigFile, type LoadedConfig } from "./config";
export type { CreateVolumeOptions, CloneVolumeOptions, CreateSnapshotOptions, ConnectOptions, UpdateVolumeOptions, UpdateSnapshotOptions } from "./schemas";
export { localConnector } from "../attach";
export * from "../util/errors";
export type { VolumeRecord, SnapshotRecord, ConnectionRecord, ConnectionInfo, VolumeStatus, SnapshotStatus, ImageProvenance } from "../persistence/records";
export type { Persistence } from "../persistence/contract";
export type { PersistenceConfig } from "../persistence/config";
export type { BackendStats, PoolStats, BlockDevice, Extent, Inspection, Progress, VolumeDriver } from "../drivers/contract";
export { copyDevice } from "../drivers/copy";
export { openImageServices, ImageServiceSet } from "./images";
export type { ImageRecord, ImageService } from "../images/contract";
