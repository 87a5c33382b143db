import { UNPRINTABLE } from "../util/names";

/** Prints a result: one JSON value with --json, else text for a person. */
export interface Output {
  json: boolean;
  /** `value` for --json; `text` (lines or a table) otherwise. */
  result(value: unknown, text: () => string): void;
}

export function output(json: boolean): Output {
  return {
    json,
    result(value, text) {
      // Text is for a terminal: whatever a record holds (a description written by a program,
      // a name kept from before names were checked) is shown, never acted on. --json is left
      // exact; JSON.stringify escapes control characters itself.
      process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${printable(text(), { keepNewlines: true })}\n`);
    },
  };
}

/** NAME (and POOL) columns are cut here; --json and `show` give the whole name. */
export const NAME_COLUMN_WIDTH = 40;

const ESCAPES: Record<string, string> = { "\n": "\\n", "\t": "\\t", "\r": "\\r" };

function escapeCharacter(ch: string): string {
  if (ESCAPES[ch]) return ESCAPES[ch];
  const code = ch.codePointAt(0) ?? 0;
  if (code <= 0xff) return `\\x${code.toString(16).padStart(2, "0")}`;
  if (code <= 0xffff) return `\\u${code.toString(16).padStart(4, "0")}`;
  return `\\u{${code.toString(16)}}`;
}

/**
 * `text` with every character a terminal would act on or hide shown escaped: C0 and C1
 * controls and DEL (`\x1b`), bidirectional controls (`\u202e`), zero-width and invisible
 * characters, lone surrogates. A newline is shown as `\n` unless `keepNewlines` (for text
 * that is already laid out in lines).
 */
export function printable(text: string, opts: { keepNewlines?: boolean } = {}): string {
  return text.replace(UNPRINTABLE, (ch) => (opts.keepNewlines && ch === "\n" ? ch : escapeCharacter(ch)));
}

const graphemes = new Intl.Segmenter(undefined, { granularity: "grapheme" });

/** How many columns `text` takes, counting a user-perceived character (é, 🇫🇷) as one. */
export function displayWidth(text: string): number {
  let width = 0;
  for (const _ of graphemes.segment(text)) width++;
  return width;
}

/**
 * `text` made printable and cut to at most `max` columns, ending in "…" when cut. Cut at
 * character boundaries of the original text, so an escape sequence is never split.
 */
export function cut(text: string, max: number): string {
  const pieces = [...graphemes.segment(text)].map((g) => printable(g.segment));
  const widths = pieces.map(displayWidth);
  if (widths.reduce((a, b) => a + b, 0) <= max) return pieces.join("");
  let out = "";
  let width = 0;
  for (let i = 0; i < pieces.length && width + widths[i] <= max - 1; i++) {
    out += pieces[i];
    width += widths[i];
  }
  return `${out}…`;
}

/**
 * Left-aligned columns with a header row. Cells are shown printable; `maxWidths` cuts the
 * named columns (by header), so one long value does not pad every row.
 */
export function table(headers: string[], rows: Array<Array<string | number | undefined>>, opts: { maxWidths?: Record<string, number> } = {}): string {
  const limits = headers.map((h) => opts.maxWidths?.[h]);
  const cell = (c: string | number | undefined, i: number) => {
    const text = c === undefined ? "" : String(c);
    return limits[i] === undefined ? printable(text) : cut(text, limits[i] as number);
  };
  const cells = [headers, ...rows.map((r) => r.map(cell))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => displayWidth(r[i]))));
  const pad = (c: string, i: number) => c + " ".repeat(Math.max(0, widths[i] - displayWidth(c)));
  return cells.map((r) => r.map(pad).join("  ").trimEnd()).join("\n");
}

/** `key: value` lines, nested objects as JSON; every value shown printable, on one line. */
export function fields(object: Record<string, unknown>): string {
  const width = Math.max(...Object.keys(object).map((k) => k.length));
  return Object.entries(object)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${printable(k).padEnd(width)}  ${printable(typeof v === "object" ? JSON.stringify(v) : String(v))}`)
    .join("\n");
}
