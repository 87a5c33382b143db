import { join, resolve } from "node:path";
import type { DriverModule } from "../contract";
import { fileConfigSchema, type FileConfig } from "./config";
import { FileDriver } from "./driver";

export const fileDriver: DriverModule<FileConfig> = {
  driverName: "file",
  configSchema: fileConfigSchema,
  secretFields: [],
  pathFields: ["path", "pools"],
  identityFields: ["path", "pools"],
  create: (backendName, config) => new FileDriver(backendName, config),
  // Records live beside the data, in the first pool, so every tool naming this backend
  // (the command, a daemon, a Pulumi program) sees the same volumes.
  defaultPersistencePath: (config, _backendName) =>
    join(resolve(config.path ?? Object.values(config.pools ?? {})[0]), ".kindling", "kindling.db"),
};

export { FileDriver } from "./driver";
export { FileBlockDevice } from "./blockdevice";
export type { FileConfig } from "./config";
