import pg from "pg";
import type { ServerPersistenceConfig } from "./config";
import type { SqlClient, SqlSession } from "./sql/client";
import { SqlServerPersistence } from "./sql/store";
import { serverError, socketFailure, type ServerFailure } from "./sql/errors";
import { serverTarget, type ServerTarget } from "./sql/target";
import { RETRIES, backOff } from "./sql/retry";
import { logger } from "../util/log";
import { errorMessage } from "../util/errors";

/** pg_advisory_xact_lock key for schema changes: "kindling" in ASCII. */
const SCHEMA_LOCK = "7739028342186977895";

/** SQLSTATE classes and codes that mean something to a user. */
function failureOf(err: unknown, connected: boolean): ServerFailure {
  const code = String((err as { code?: string }).code ?? "");
  if (code === "28P01" || code === "28000") return "auth";
  if (code === "3D000") return "no-database";
  if (code === "53100") return "full";
  if (code.startsWith("08") || code === "57P01" || code === "57P02" || code === "57P03") return connected ? "lost" : "unreachable";
  return socketFailure(err, connected) ?? "other";
}

/** A transaction PostgreSQL gave up to break a deadlock or a serialization conflict: run it again. */
function retryable(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === "40P01" || code === "40001";
}

/** `?` placeholders to PostgreSQL's `$1, $2, ...` (kindling's statements have no literal `?`). */
function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

class PostgresClient implements SqlClient {
  readonly dialect = "postgres" as const;
  readonly location: string;

  constructor(private readonly pool: pg.Pool, private readonly target: ServerTarget) {
    this.location = target.location;
    // An idle connection the server dropped (a restart) is reported here; the pool replaces it
    // on the next query. Unhandled, it would end the process.
    pool.on("error", (err) => logger().warn({ store: this.location, err: errorMessage(err) }, "a connection to the records store was lost; the next operation connects again"));
  }

  private mapped(err: unknown, connected: boolean): unknown {
    return serverError(failureOf(err, connected), this.target, err);
  }

  private session(client: pg.PoolClient): SqlSession {
    return {
      query: async <Row>(sql: string, params: unknown[] = []) => {
        const result = await client.query(numbered(sql), params);
        return { rows: result.rows as Row[], affected: result.rowCount ?? 0 };
      },
    };
  }

  async query<Row = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<{ rows: Row[]; affected: number }> {
    try {
      const result = await this.pool.query(numbered(sql), params);
      return { rows: result.rows as Row[], affected: result.rowCount ?? 0 };
    } catch (err) {
      throw this.mapped(err, true);
    }
  }

  async transaction<T>(work: (session: SqlSession) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      let client: pg.PoolClient;
      try {
        client = await this.pool.connect();
      } catch (err) {
        throw this.mapped(err, false);
      }
      let broken: Error | undefined;
      try {
        await client.query("BEGIN");
        const result = await work(this.session(client));
        await client.query("COMMIT");
        return result;
      } catch (err) {
        // A broken connection is not given back to the pool for reuse.
        if (failureOf(err, true) === "lost") broken = err as Error;
        else await client.query("ROLLBACK").catch((e: Error) => (broken = e));
        if (retryable(err) && attempt < RETRIES) {
          await backOff(attempt);
          continue;
        }
        throw this.mapped(err, true);
      } finally {
        client.release(broken);
      }
    }
  }

  withSchemaLock<T>(work: (session: SqlSession) => Promise<T>): Promise<T> {
    // Schema changes are transactional in PostgreSQL: the lock and the changes go together.
    return this.transaction(async (s) => {
      await s.query("SELECT pg_advisory_xact_lock(?)", [SCHEMA_LOCK]);
      return work(s);
    });
  }

  alreadyApplied(): boolean {
    return false;
  }

  uniqueViolation(err: unknown): "primary" | "other" | undefined {
    const e = err as { code?: string; constraint?: string };
    if (e.code !== "23505") return undefined;
    return e.constraint?.endsWith("_pkey") ? "primary" : "other";
  }

  upsert(table: string, columns: string[], key: string): string {
    const others = columns.filter((c) => c !== key);
    return `INSERT INTO ${table} (${columns.join(", ")}) VALUES (${columns.map(() => "?").join(", ")}) ON CONFLICT (${key}) DO UPDATE SET ${others.map((c) => `${c} = EXCLUDED.${c}`).join(", ")}`;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** Records in PostgreSQL: connects (within the timeout), creates or upgrades the schema. */
export async function openPostgres(config: ServerPersistenceConfig, opts: { baseDir?: string } = {}): Promise<SqlServerPersistence> {
  const target = serverTarget(config, 5432, opts.baseDir);
  const pool = new pg.Pool({
    host: target.host,
    port: target.port,
    user: target.user,
    database: target.database,
    password: target.password,
    ssl: target.ssl,
    max: target.poolSize,
    connectionTimeoutMillis: target.timeoutMs,
    idleTimeoutMillis: 30_000,
    // Lets an idle process exit: the pool's timers and sockets never keep it alive by themselves.
    allowExitOnIdle: true,
    keepAlive: true,
    application_name: "kindling",
  });
  return SqlServerPersistence.open(new PostgresClient(pool, target));
}
