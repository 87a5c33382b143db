import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { InvalidInputError } from "../util/errors";

// Paths written in configuration (a file's backends and persistence, or a program's backend
// settings) mean what they would mean to a shell user: relative to the config file, and `~`
// for the home directory. An empty path means nothing: it is kept empty for the schema to
// refuse, never turned into "the config file's directory".

/** `~` and `~/...` as the home directory; `~user/...` is refused (it would need a user lookup). */
export function expandHome(path: string, field: string): string {
  if (path === "~") return homedir();
  if (path.startsWith("~/")) return join(homedir(), path.slice(2));
  if (path.startsWith("~")) {
    throw new InvalidInputError(field, `${JSON.stringify(path)}: only ~ and ~/... are expanded (to the home directory); write another user's home as a full path`);
  }
  return path;
}

/** One path setting: `~` expanded, then resolved against `baseDir` when there is one. */
export function resolvePath(path: string, baseDir: string | undefined, field: string): string {
  if (path === "") return path;
  const expanded = expandHome(path, field);
  return baseDir === undefined ? expanded : resolve(baseDir, expanded);
}

/**
 * The driver's path settings (`fields`, as its module lists them) resolved: `~` expanded, and
 * relative paths against `baseDir` (the config file's directory) when given. A map of paths
 * (the file driver's pools) resolves value by value. Values that are not strings are left for
 * the driver's schema to refuse. `fieldPrefix` names the entry in errors ("backends.local").
 */
export function resolvePaths(config: Record<string, unknown>, fields: readonly string[], baseDir: string | undefined, fieldPrefix = "backend"): Record<string, unknown> {
  const out: Record<string, unknown> = { ...config };
  const resolved = (v: unknown, field: string) => (typeof v === "string" ? resolvePath(v, baseDir, field) : v);
  for (const key of fields) {
    const value = out[key];
    if (value === undefined) {
      delete out[key];
      continue;
    }
    out[key] = value && typeof value === "object" && !Array.isArray(value)
      ? Object.fromEntries(Object.entries(value).map(([k, v]) => [k, resolved(v, `${fieldPrefix}.${key}.${k}`)]))
      : resolved(value, `${fieldPrefix}.${key}`);
  }
  return out;
}

/**
 * A `persistence` entry with `~` expanded in its `path` (json, sqlite) or `module` (custom).
 * Relative paths are left as they are: opening the persistence resolves them against the same
 * base directory. Anything not shaped like an entry is left for its schema to refuse.
 */
export function expandPersistenceHome<T>(persistence: T, field: string): T {
  if (typeof persistence !== "object" || persistence === null) return persistence;
  const entry = { ...(persistence as Record<string, unknown>) };
  for (const key of ["path", "module"]) {
    const value = entry[key];
    if (typeof value === "string" && value !== "") entry[key] = expandHome(value, `${field}.${key}`);
  }
  return entry as T;
}
