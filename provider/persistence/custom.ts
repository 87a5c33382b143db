import { isAbsolute, resolve } from "node:path";
import type { Persistence } from "./contract";
import { InvalidInputError, errorMessage } from "../util/errors";

const METHODS = [
  "getVolumes", "getSnapshots", "getConnections", "getKeyValues",
  "setVolume", "setSnapshot", "setConnection", "setKeyValue",
  "deleteVolume", "deleteSnapshot", "deleteConnection", "deleteKeyValue",
  "compareAndSetRecord", "compareAndDeleteRecord", "compareAndSetKeyValue", "close",
] as const;

/**
 * A plugin of the user's: a module path (relative to the config file) or a package name that
 * exports `createPersistence(options)` (or a default export that is that factory or a class).
 * The object it returns is checked for every method of the contract before use; a plugin that
 * does not say how far its guarantees reach is taken to hold for one process only.
 */
export async function loadCustomPersistence(module: string, options: Record<string, unknown>, baseDir?: string): Promise<Persistence> {
  const specifier = module.startsWith(".") || isAbsolute(module) ? resolve(baseDir ?? process.cwd(), module) : module;
  let exported: Record<string, unknown>;
  try {
    exported = require(specifier) as Record<string, unknown>;
  } catch (err) {
    throw new InvalidInputError("persistence.module", `cannot load ${JSON.stringify(module)}: ${errorMessage(err)}`);
  }
  const factory = exported.createPersistence ?? exported.default ?? exported;
  if (typeof factory !== "function") {
    throw new InvalidInputError("persistence.module", "must export createPersistence(options) or a default factory or class");
  }
  let instance: unknown;
  try {
    instance = isClass(factory) ? new (factory as new (o: unknown) => unknown)(options) : await (factory as (o: unknown) => unknown)(options);
  } catch (err) {
    throw new InvalidInputError("persistence.module", `the plugin failed to start: ${errorMessage(err)}`);
  }
  for (const method of METHODS) {
    if (typeof (instance as Record<string, unknown>)?.[method] !== "function") {
      throw new InvalidInputError("persistence.module", `the plugin has no ${method}() method`);
    }
  }
  const plugin = instance as Persistence & { kind?: string; location?: string; scope?: string };
  const defaults = { kind: "custom", location: `custom module ${module}`, scope: "process" };
  for (const [key, value] of Object.entries(defaults)) {
    if (!(key in plugin)) Object.defineProperty(plugin, key, { value, enumerable: true });
  }
  return plugin as Persistence;
}

function isClass(fn: unknown): boolean {
  return typeof fn === "function" && /^class[\s{]/.test(Function.prototype.toString.call(fn));
}
