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
      process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${text()}\n`);
    },
  };
}

/** Left-aligned columns with a header row. */
export function table(headers: string[], rows: Array<Array<string | number | undefined>>): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => (c === undefined ? "" : String(c))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  return cells.map((r) => r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd()).join("\n");
}

/** `key: value` lines, nested objects as JSON. */
export function fields(object: Record<string, unknown>): string {
  const width = Math.max(...Object.keys(object).map((k) => k.length));
  return Object.entries(object)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k.padEnd(width)}  ${typeof v === "object" ? JSON.stringify(v) : String(v)}`)
    .join("\n");
}
