import { InvalidInputError } from "../util/errors";
import { RESERVED_KEYS, reservedKey, reservedKeyRule } from "../util/names";

// Parsing of command-line values. Each error names the flag, so `--size 1.5` says `--size`.

/** A whole number of GiB, at least 1. */
export function parseSize(flag: string, value: string | undefined): number {
  if (value === undefined) throw new InvalidInputError(flag, "is required (a whole number of GiB)");
  if (!/^[0-9]+$/.test(value)) throw new InvalidInputError(flag, `must be a whole number of GiB, not ${JSON.stringify(value)}`);
  const size = Number(value);
  if (size < 1) throw new InvalidInputError(flag, "must be at least 1 GiB");
  if (!Number.isSafeInteger(size)) throw new InvalidInputError(flag, "is too large");
  return size;
}

/**
 * `K=V` pairs of a repeated flag, as a map; a repeated key is an error, and so is a reserved
 * key (`__proto__` would otherwise vanish into the map's prototype: the map has none).
 */
export function parsePairs(flag: string, values: string[] | undefined): Record<string, string> {
  const out: Record<string, string> = Object.create(null);
  for (const item of values ?? []) {
    const at = item.indexOf("=");
    if (at <= 0) throw new InvalidInputError(flag, `expected KEY=VALUE, got ${JSON.stringify(item)}`);
    const key = item.slice(0, at);
    if (RESERVED_KEYS.includes(key)) throw new InvalidInputError(flag, reservedKeyRule(key));
    if (Object.hasOwn(out, key)) throw new InvalidInputError(flag, `${key} is given twice`);
    out[key] = item.slice(at + 1);
  }
  return out;
}

/** A JSON object given on the command line (connectors). */
export function parseJsonObject(flag: string, value: string | undefined): Record<string, unknown> {
  if (value === undefined) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    throw new InvalidInputError(flag, "must be a JSON object, e.g. '{\"host\":\"node1\"}'");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new InvalidInputError(flag, "must be a JSON object");
  const reserved = reservedKey(parsed);
  if (reserved !== undefined) throw new InvalidInputError(flag, reservedKeyRule(reserved));
  return parsed as Record<string, unknown>;
}

export function required(flag: string, value: string | undefined): string {
  if (value === undefined || value === "") throw new InvalidInputError(flag, "is required");
  return value;
}
