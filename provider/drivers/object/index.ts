import { join } from "node:path";
import type { DriverModule } from "../contract";
import { dataHome } from "../../util/paths";
import { objectConfigSchema, type ObjectConfig } from "./config";
import type { ObjectDriver } from "./driver";

// The driver's code is loaded when a backend of this kind is opened: configuration checks need
// only the schema, and a process never holds the code of drivers it does not use.
const implementation = () => require("./driver") as typeof import("./driver");

export const objectDriver: DriverModule<ObjectConfig> = {
  driverName: "object",
  configSchema: objectConfigSchema,
  secretFields: ["secretKey", "key", "token"],
  pathFields: ["cacheDir", "secretKeyFile", "keyFile"],
  identityFields: ["api", "endpoint", "bucket", "authUrl", "storageUrl", "container"],
  create: (backendName, config): ObjectDriver => new (implementation().ObjectDriver)(backendName, config),
  // An object store has no directory of ours to keep records beside the data, so they live in
  // this user's data home under the backend's name, as for rbd.
  defaultPersistencePath: (_config, backendName) => join(dataHome(), "object", backendName, "kindling.db"),
};

export type { ObjectConfig } from "./config";
