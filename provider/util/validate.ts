import type { z } from "zod";
import { InvalidInputError } from "./errors";

/**
 * Parses input at a boundary. The first problem becomes an InvalidInputError naming the field
 * by its dotted path (prefixed with `prefix`, e.g. "backends.local"), so a user sees exactly
 * which key to fix.
 */
export function parseInput<T>(schema: z.ZodType<T>, value: unknown, prefix = ""): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  // An unknown key is usually the cause of the other problems (a typo'd "backend" leaves
  // "backends" missing), so it is the one to report.
  const issue = result.error.issues.find((i) => i.code === "unrecognized_keys") ?? result.error.issues[0];
  const join = (parts: PropertyKey[]) => [prefix, ...parts.map(String)].filter((p) => p !== "").join(".");
  if (issue.code === "unrecognized_keys") {
    throw new InvalidInputError(join([...issue.path, issue.keys[0]]), "unknown field");
  }
  const field = join(issue.path) || prefix || "input";
  const given = issue.path.reduce<unknown>((at, key) => (at as Record<PropertyKey, unknown> | undefined)?.[key], value);
  const message = issue.code === "invalid_type" && given === undefined ? "is required" : issue.message;
  throw new InvalidInputError(field, message);
}
