import { InvalidInputError } from "../util/errors";

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

/** `K=V` pairs of a repeated flag, as a map; a repeated key is an error. */
export function parsePairs(flag: string, values: string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of values ?? []) {
    const at = item.indexOf("=");
    if (at <= 0) throw new InvalidInputError(flag, `expected KEY=VALUE, got ${JSON.stringify(item)}`);
    const key = item.slice(0, at);
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
  return parsed as Record<string, unknown>;
}

export function required(flag: string, value: string | undefined): string {
  if (value === undefined || value === "") throw new InvalidInputError(flag, "is required");
  return value;
}
