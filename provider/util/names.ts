import { z } from "zod";

const MAX_NAME_BYTES = 255;

/**
 * A user-facing name (volume, snapshot, backend, pool). Names are labels kept in persistence;
 * files on disk are named by id, so even an accepted name never becomes a path. The rules
 * still refuse what could confuse a path or a terminal: `/`, NUL, control characters, `.`, `..`.
 */
export const nameSchema = z
  .string()
  .min(1, "must not be empty")
  .refine((s) => Buffer.byteLength(s, "utf8") <= MAX_NAME_BYTES, `must be at most ${MAX_NAME_BYTES} bytes`)
  .refine((s) => !s.includes("/"), "must not contain '/'")
  .refine((s) => !s.includes("\0"), "must not contain NUL")
  // eslint-disable-next-line no-control-regex
  .refine((s) => !/[\u0000-\u001f\u007f]/.test(s), "must be printable (no control characters)")
  .refine((s) => s !== "." && s !== "..", "must not be '.' or '..'");

/** Free-form text such as descriptions: printable-ish, bounded. */
export const descriptionSchema = z.string().max(4096, "must be at most 4096 characters");

/** User metadata: string keys and values, bounded so a record stays small. */
export const metadataSchema = z
  .record(z.string().min(1).max(255), z.string().max(4096))
  .refine((m) => Object.keys(m).length <= 64, "must have at most 64 keys");

/** Whole GiB, at least 1. The upper bound depends on the pool and is checked by the driver. */
export const sizeGiBSchema = z
  .number({ error: "must be a number of GiB" })
  .int("must be a whole number of GiB")
  .min(1, "must be at least 1 GiB")
  .max(1024 * 1024, "must be at most 1048576 GiB (1 PiB)");

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function isId(value: string): boolean {
  return UUID.test(value);
}
