// The schema of every SQL store (sqlite, postgres, mysql), as one list of versions: version N
// means the same tables wherever the records live. Append only: a released step never changes.
// Records are stored whole as JSON (`doc`) with the columns that filters, constraints and
// compare-and-set need beside it.

export type Dialect = "sqlite" | "postgres" | "mysql";

interface Step {
  /** What the step does, for messages. */
  does: string;
  statements: Record<Dialect, string[]>;
}

// Column types per dialect. MySQL compares text case-insensitively by default: names, ids and
// keys are compared as bytes there (the _bin collations), as SQLite and PostgreSQL do.
const T = {
  sqlite: { id: "TEXT", name: "TEXT", doc: "TEXT", key: "TEXT", table: "" },
  postgres: { id: "VARCHAR(64)", name: "VARCHAR(255)", doc: "TEXT", key: "VARCHAR(700)", table: "" },
  mysql: {
    id: "VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin",
    name: "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    doc: "LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    key: "VARCHAR(700) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    table: " ENGINE=InnoDB",
  },
} as const;

/** `key` is a reserved word in MySQL. */
export function quoteKey(dialect: Dialect): string {
  return dialect === "mysql" ? "`key`" : "key";
}

function tables(d: Dialect): string[] {
  const t = T[d];
  const key = quoteKey(d);
  return [
    `CREATE TABLE volumes (id ${t.id} PRIMARY KEY, backend ${t.name} NOT NULL, name ${t.name} NOT NULL, doc ${t.doc} NOT NULL, UNIQUE (backend, name))${t.table}`,
    `CREATE TABLE snapshots (id ${t.id} PRIMARY KEY, backend ${t.name} NOT NULL, name ${t.name} NOT NULL, volume_id ${t.id} NOT NULL, doc ${t.doc} NOT NULL, UNIQUE (backend, name))${t.table}`,
    "CREATE INDEX snapshots_volume ON snapshots (volume_id)",
    `CREATE TABLE connections (id ${t.id} PRIMARY KEY, backend ${t.name} NOT NULL, volume_id ${t.id} NOT NULL, doc ${t.doc} NOT NULL)${t.table}`,
    "CREATE INDEX connections_volume ON connections (volume_id)",
    `CREATE TABLE key_values (${key} ${t.key} PRIMARY KEY, value ${t.doc} NOT NULL)${t.table}`,
  ];
}

function versions(): string[] {
  // Records written before versions existed count as version 1.
  return ["volumes", "snapshots", "connections"].map((table) => `ALTER TABLE ${table} ADD COLUMN version INTEGER NOT NULL DEFAULT 1`);
}

const STEPS: Step[] = [
  { does: "the tables", statements: { sqlite: tables("sqlite"), postgres: tables("postgres"), mysql: tables("mysql") } },
  { does: "record versions for compare-and-set", statements: { sqlite: versions(), postgres: versions(), mysql: versions() } },
];

/** How many versions this kindling knows. */
export const SCHEMA_VERSION = STEPS.length;

/** The statements that take a database of `from` versions to `from + 1`. */
export function stepAfter(from: number, dialect: Dialect): { does: string; statements: string[] } {
  const step = STEPS[from];
  return { does: step.does, statements: step.statements[dialect] };
}
