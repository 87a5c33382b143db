import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { z } from "zod";
import { openPersistence } from "../persistence";
import type { Persistence } from "../persistence/contract";
import { persistenceConfigSchema, type PersistenceConfig } from "../persistence/config";
import { InvalidInputError, errorMessage } from "../util/errors";
import { nameSchema, withoutReservedKeys } from "../util/names";
import { parseInput } from "../util/validate";
import { dataHome } from "../util/paths";
import { Backend } from "./backend";
import { expandPersistenceHome } from "./config-paths";
import { imageCacheSettingsSchema } from "../images/cache/settings";

/**
 * The configuration file: backends by name, optionally one persistence for all of them, and
 * the image services images come from and go to.
 * Each backend entry is validated by its driver's strict schema when the backend is built.
 */
export const configFileSchema = z.strictObject({
  persistence: persistenceConfigSchema.optional(),
  backends: withoutReservedKeys(z
    .record(nameSchema, z.looseObject({ driver: z.string({ error: "is required (e.g. \"file\")" }) }))
    .refine((b) => Object.keys(b).length > 0, "must name at least one backend")),
  /** Image services by name (Glance v2), each validated by its own schema when it is built. */
  imageServices: withoutReservedKeys(z.record(nameSchema, z.looseObject({ type: z.string({ error: "is required (\"glance\")" }) }))).optional(),
  /** Limits of the content-keyed image cache, per backend and pool; the cache is off without it. */
  imageCache: imageCacheSettingsSchema.optional(),
});

export type ConfigFile = z.infer<typeof configFileSchema>;

export interface LoadedConfig {
  config: ConfigFile;
  /** Where it came from: a file path, or "embedded default". */
  source: string;
  /** Relative paths in the file resolve against this directory. */
  baseDir: string;
}

export { dataHome };

/** One `file` backend named `local`; its SQLite records sit beside its volumes. */
export function defaultConfig(env: NodeJS.ProcessEnv = process.env): ConfigFile {
  return { backends: { local: { driver: "file", path: join(dataHome(env), "volumes") } } };
}

/** `--config FILE`, else `$KINDLING_CONFIG`, else `./kindling.json`, else the embedded default. */
export function loadConfig(opts: { path?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): LoadedConfig {
  const env = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();
  const explicit = opts.path ?? (env.KINDLING_CONFIG || undefined);
  const local = join(cwd, "kindling.json");
  const file = explicit ? resolve(cwd, explicit) : existsSync(local) ? local : undefined;
  if (!file) return { config: defaultConfig(env), source: "embedded default", baseDir: cwd };
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new InvalidInputError("config", `cannot read ${file}: ${errorMessage(err)}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new InvalidInputError("config", `${file} is not valid JSON: ${errorMessage(err)}`);
  }
  return { config: parseInput(configFileSchema, json), source: file, baseDir: dirname(file) };
}

/** The backends of one configuration, and the persistence they may share. */
export class BackendSet {
  constructor(
    readonly backends: Map<string, Backend>,
    private readonly shared?: Persistence,
  ) {}

  names(): string[] {
    return [...this.backends.keys()];
  }

  /** A backend by name; without a name, the only one (or an error listing the choices). */
  get(name?: string): Backend {
    if (name === undefined) {
      if (this.backends.size === 1) return [...this.backends.values()][0];
      throw new InvalidInputError("backend", `the configuration has ${this.backends.size} backends (${this.names().join(", ")}); choose one with --backend`);
    }
    const backend = this.backends.get(name);
    if (!backend) throw new InvalidInputError("backend", `no backend named ${JSON.stringify(name)}; configured: ${this.names().join(", ")}`);
    return backend;
  }

  async close(): Promise<void> {
    for (const backend of this.backends.values()) await backend.close();
    await this.shared?.close();
  }
}

/**
 * Builds every backend of a configuration. A top-level `persistence` is opened once and shared;
 * otherwise each backend keeps its records where its driver says (beside its data).
 * Every entry is validated before anything is opened, so a bad entry creates nothing.
 */
export async function openBackends(loaded: LoadedConfig): Promise<BackendSet> {
  const { config, baseDir } = loaded;
  // `~` in a persistence path is the home directory, as in a backend's own paths.
  const expanded = <T extends Record<string, unknown>>(name: string, entry: T): T =>
    entry.persistence === undefined ? entry : { ...entry, persistence: expandPersistenceHome(entry.persistence, `backends.${name}.persistence`) };
  const build = (persistence?: Persistence) =>
    new Map(Object.entries(config.backends).map(([name, entry]) =>
      [name, new Backend({ ...expanded(name, entry), name }, { persistence, baseDir, fieldPrefix: `backends.${name}`, imageCache: config.imageCache })]));
  build(); // validation only: throws on the first bad entry
  const sharedConfig = config.persistence && expandPersistenceHome(config.persistence, "persistence");
  const shared = sharedConfig ? await openPersistence(sharedConfig as PersistenceConfig, { baseDir }) : undefined;
  const set = new BackendSet(build(shared), shared);
  try {
    for (const backend of set.backends.values()) await backend.ready();
  } catch (err) {
    await set.close();
    throw err;
  }
  return set;
}
