import { resolve } from "node:path";
import type { Persistence } from "./contract";
import { persistenceConfigSchema, type PersistenceConfig } from "./config";
import { MemoryPersistence } from "./memory";
import { JsonPersistence } from "./json";
import { SqlitePersistence } from "./sqlite";
import { loadCustomPersistence } from "./custom";
import { parseInput } from "../util/validate";

/** Opens the persistence a config names; relative paths resolve against `baseDir`. */
export async function openPersistence(config: PersistenceConfig, opts: { baseDir?: string } = {}): Promise<Persistence> {
  const parsed = parseInput(persistenceConfigSchema, config, "persistence");
  const base = opts.baseDir ?? process.cwd();
  switch (parsed.storage) {
    case "memory":
      return new MemoryPersistence();
    case "json":
      return new JsonPersistence(resolve(base, parsed.path));
    case "sqlite":
      return new SqlitePersistence(resolve(base, parsed.path));
    // The servers' clients load only when used: they cost every command ~75 ms to require.
    case "postgres":
      return (require("./postgres") as typeof import("./postgres")).openPostgres(parsed, { baseDir: base });
    case "mysql":
      return (require("./mysql") as typeof import("./mysql")).openMysql(parsed, { baseDir: base });
    case "custom":
      return loadCustomPersistence(parsed.module, parsed.options ?? {}, base);
  }
}

export { persistenceConfigSchema, type PersistenceConfig } from "./config";
export type { Persistence, VolumeFilter, SnapshotFilter, ConnectionFilter } from "./contract";
export * from "./records";
export { MemoryPersistence } from "./memory";
export { JsonPersistence } from "./json";
export { SqlitePersistence } from "./sqlite";
export { loadCustomPersistence } from "./custom";
