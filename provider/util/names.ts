import { z } from "zod";

const MAX_NAME_BYTES = 255;

// Character classes shared by the name rules and by the command's text output (which shows
// these escaped rather than letting a terminal act on them or hide them).

/** C0 and C1 controls, DEL, and the Unicode line and paragraph separators. */
// eslint-disable-next-line no-control-regex
export const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/u;
/** Bidirectional embeddings, overrides, isolates and marks: they reorder what a terminal shows. */
export const BIDI_CONTROLS = /[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]/u;
/**
 * Zero-width and other invisible characters: Unicode's format characters (Cf: zero-width
 * space and joiners, word joiner, BOM, soft hyphen, interlinear annotation, tags...) and its
 * default-ignorable code points (variation selectors, Hangul fillers, combining grapheme
 * joiner...). Two names differing only by one of these look the same.
 */
export const INVISIBLE_CHARACTERS = /[\p{Cf}\p{Default_Ignorable_Code_Point}]/u;
/**
 * What a string can hold that is not text: lone surrogates (JavaScript strings are UTF-16 and
 * may hold halves of a pair) and U+FFFD, which is how invalid UTF-8 in argv or a file arrives.
 */
export const NOT_UTF8 = /[\p{Cs}\ufffd]/u;

/** Every character the command's text output shows escaped (all of the classes above). */
export const UNPRINTABLE = new RegExp(
  [CONTROL_CHARACTERS, BIDI_CONTROLS, INVISIBLE_CHARACTERS, /\p{Cs}/u].map((r) => r.source).join("|"),
  "gu",
);

const EDGE_WHITESPACE = /^\p{White_Space}|\p{White_Space}$/u;

/** "U+202E": how a rule names the character it found. */
export function codePointName(ch: string): string {
  return `U+${(ch.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, "0")}`;
}

/**
 * The rule a would-be name breaks, or undefined when it is fine. Checked in this order, so the
 * message names the most basic problem first.
 */
export function nameProblem(name: string): string | undefined {
  if (name.length === 0) return "must not be empty";
  const notUtf8 = NOT_UTF8.exec(name);
  if (notUtf8) {
    return notUtf8[0] === "\ufffd"
      ? "must be valid UTF-8 (found U+FFFD, which stands in for bytes that were not UTF-8)"
      : `must be valid UTF-8 (found a lone surrogate ${codePointName(notUtf8[0])})`;
  }
  if (Buffer.byteLength(name, "utf8") > MAX_NAME_BYTES) return `must be at most ${MAX_NAME_BYTES} bytes`;
  if (name.includes("/")) return "must not contain '/'";
  if (name.includes("\0")) return "must not contain NUL";
  const control = CONTROL_CHARACTERS.exec(name);
  if (control) return `must be printable (no control characters or line breaks; found ${codePointName(control[0])})`;
  const bidi = BIDI_CONTROLS.exec(name);
  if (bidi) return `must not contain bidirectional text controls, which reorder what is shown (found ${codePointName(bidi[0])})`;
  const invisible = INVISIBLE_CHARACTERS.exec(name);
  if (invisible) return `must not contain zero-width or invisible characters (found ${codePointName(invisible[0])})`;
  if (EDGE_WHITESPACE.test(name)) return "must not start or end with whitespace";
  if (name === "." || name === "..") return "must not be '.' or '..'";
  // Commands take "VOL" as a name or an id, ids first: a name shaped like an id would stand
  // for whichever object has that id, e.g. `volume delete <name>` deleting another volume.
  if (isId(name)) return "must not be a UUID: ids are UUIDs, and a name shaped like one would be taken for an id";
  return undefined;
}

/**
 * A user-facing name (volume, snapshot, backend, pool). Names are labels kept in persistence;
 * files on disk are named by id, so even an accepted name never becomes a path. The rules
 * still refuse what could confuse a path, a terminal or a reader (see nameProblem), and names
 * that could be mistaken for ids.
 */
export const nameSchema = z.string().superRefine((name, ctx) => {
  const problem = nameProblem(name);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

/**
 * Keys a JavaScript object treats specially: `__proto__` sets the prototype when assigned (so
 * it vanishes from a rebuilt object), and `constructor` and `prototype` are found on every
 * object. A map given with one of them would not mean what it says.
 */
export const RESERVED_KEYS: readonly string[] = ["__proto__", "constructor", "prototype"];

/** The first reserved own key of an object, if it has one. */
export function reservedKey(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  return Object.keys(value).find((key) => RESERVED_KEYS.includes(key));
}

export function reservedKeyRule(key: string): string {
  return `${JSON.stringify(key)} cannot be a key (${RESERVED_KEYS.join(", ")} are reserved)`;
}

/**
 * `schema`, with reserved keys refused naming the key. The check runs on the input as given,
 * before zod builds its own object (which drops an own `__proto__` key without a word).
 */
export function withoutReservedKeys<T extends z.ZodType>(schema: T) {
  return z.preprocess<unknown, T, z.input<T>>((value, ctx) => {
    const key = reservedKey(value);
    if (key !== undefined) ctx.addIssue({ code: "custom", message: reservedKeyRule(key), path: [key], input: value });
    return value;
  }, schema);
}

/** Free-form text such as descriptions: printable-ish, bounded. */
export const descriptionSchema = z.string().max(4096, "must be at most 4096 characters");

/** User metadata: string keys and values, bounded so a record stays small. */
export const metadataSchema = withoutReservedKeys(
  z.record(z.string().min(1).max(255), z.string().max(4096)).refine((m) => Object.keys(m).length <= 64, "must have at most 64 keys"),
);

/** Whole GiB, at least 1. The upper bound depends on the pool and is checked by the driver. */
export const sizeGiBSchema = z
  .number({ error: "must be a number of GiB" })
  .int("must be a whole number of GiB")
  .min(1, "must be at least 1 GiB")
  .max(1024 * 1024, "must be at most 1048576 GiB (1 PiB)");

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `value` is shaped like a kindling id (a UUID), in any case. */
export function isId(value: string): boolean {
  return typeof value === "string" && UUID.test(value);
}

/** The form ids are recorded and looked up in: lower case (a UUID's case carries no meaning). */
export function normalizeId(value: string): string {
  return value.toLowerCase();
}
