import type { Dialect } from "./migrations";

/** One connection's statements: `?` placeholders, whatever the server's own form. */
export interface SqlSession {
  query<Row = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<{ rows: Row[]; affected: number }>;
}

/**
 * What a database server store needs of its server's client (a pool of connections). The
 * store's logic is written once against this; postgres.ts and mysql.ts say how their server
 * does each thing.
 */
export interface SqlClient extends SqlSession {
  readonly dialect: Exclude<Dialect, "sqlite">;
  /** The server and database, without credentials: postgres://kindling@db1:5432/kindling. */
  readonly location: string;
  /**
   * Runs `work` in one transaction on one connection: committed when it resolves, rolled back
   * when it throws. A transaction the server aborted to break a deadlock (or a serialization
   * failure) is run again, a few times.
   */
  transaction<T>(work: (session: SqlSession) => Promise<T>): Promise<T>;
  /**
   * Runs `work` holding the server's lock for schema changes, so two processes upgrading one
   * database at once take turns (PostgreSQL: an advisory lock; MySQL: GET_LOCK).
   */
  withSchemaLock<T>(work: (session: SqlSession) => Promise<T>): Promise<T>;
  /**
   * True when a schema statement failed because what it makes is there already: only servers
   * whose schema changes are not transactional (MySQL) can meet a step done in part.
   */
  alreadyApplied(err: unknown): boolean;
  /** Which unique constraint an error broke: the primary key, or one on names; else undefined. */
  uniqueViolation(err: unknown): "primary" | "other" | undefined;
  /** INSERT or, on a key already there, UPDATE: each server says it its own way. */
  upsert(table: string, columns: string[], key: string): string;
  close(): Promise<void>;
}
