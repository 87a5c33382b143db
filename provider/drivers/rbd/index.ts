import { join } from "node:path";
import type { DriverModule } from "../contract";
import { dataHome } from "../../util/paths";
import { rbdConfigSchema, type RbdConfig } from "./config";
import type { RbdDriver } from "./driver";

// The driver's code is loaded when a backend of this kind is opened: configuration checks need
// only the schema, and a process never holds the code of drivers it does not use.
const implementation = () => require("./driver") as typeof import("./driver");

export const rbdDriver: DriverModule<RbdConfig> = {
  driverName: "rbd",
  configSchema: rbdConfigSchema,
  secretFields: ["key"],
  pathFields: ["cephConf", "keyring"],
  identityFields: ["pool", "pools", "cephConf", "monHost"],
  create: (backendName, config): RbdDriver => new (implementation().RbdDriver)(backendName, config),
  // A Ceph cluster has no directory of ours to keep records beside the data, so they live in
  // this user's data home under the backend's name: the command, the NBD daemon and a Pulumi
  // program on this host that name the same backend share them.
  defaultPersistencePath: (_config, backendName) => join(dataHome(), "rbd", backendName, "kindling.db"),
};

export type { RbdConfig } from "./config";
