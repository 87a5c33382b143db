import { join, resolve } from "node:path";
import type { DriverModule } from "../contract";
import { fileConfigSchema, type FileConfig } from "./config";
import type { FileDriver } from "./driver";

// The driver's code is loaded when a backend of this kind is opened: configuration checks need
// only the schema, and a process never holds the code of drivers it does not use.
const implementation = () => require("./driver") as typeof import("./driver");

export const fileDriver: DriverModule<FileConfig> = {
  driverName: "file",
  configSchema: fileConfigSchema,
  secretFields: [],
  pathFields: ["path", "pools"],
  identityFields: ["path", "pools"],
  create: (backendName, config): FileDriver => new (implementation().FileDriver)(backendName, config),
  // Records live beside the data, in the first pool, so every tool naming this backend
  // (the command, a daemon, a Pulumi program) sees the same volumes.
  defaultPersistencePath: (config, _backendName) =>
    join(resolve(config.path ?? Object.values(config.pools ?? {})[0]), ".kindling", "kindling.db"),
};

export type { FileConfig } from "./config";
