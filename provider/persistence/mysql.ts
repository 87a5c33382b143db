import mysql from "mysql2/promise";
import type { ServerPersistenceConfig } from "./config";
import type { SqlClient, SqlSession } from "./sql/client";
import { SqlServerPersistence } from "./sql/store";
import { serverError, socketFailure, type ServerFailure } from "./sql/errors";
import { serverTarget, type ServerTarget } from "./sql/target";
import { RETRIES, backOff } from "./sql/retry";

/** GET_LOCK name for schema changes, and how long a process waits for another's upgrade. */
const SCHEMA_LOCK = "kindling-schema";
const SCHEMA_LOCK_SECONDS = 60;

type Failure = { errno?: number; code?: string; message?: string };

/** MySQL and MariaDB error numbers that mean something to a user. */
function failureOf(err: unknown, connected: boolean): ServerFailure {
  const e = err as Failure;
  if (e.errno === 1045 || e.errno === 1044 || e.errno === 1698) return "auth";
  if (e.errno === 1049) return "no-database";
  // 1114 "the table is full", 1021 "disk full", and errno 28 (ENOSPC) inside the server's message.
  if (e.errno === 1114 || e.errno === 1021 || /errno: 28\b|No space left/i.test(e.message ?? "")) return "full";
  // The server went away or killed the connection (a restart, KILL, a shutdown).
  if (e.errno === 2006 || e.errno === 2013 || e.errno === 1053 || e.errno === 1927 || e.errno === 4031) return connected ? "lost" : "unreachable";
  return socketFailure(err, connected) ?? "other";
}

/** InnoDB broke a deadlock, or a lock wait timed out: the transaction may run again. */
function retryable(err: unknown): boolean {
  const errno = (err as Failure).errno;
  return errno === 1213 || errno === 1205;
}

type Pool = mysql.Pool;
type Connection = mysql.PoolConnection;

function affectedOf(result: unknown): number {
  return (result as { affectedRows?: number }).affectedRows ?? 0;
}

class MysqlClient implements SqlClient {
  readonly dialect = "mysql" as const;
  readonly location: string;

  constructor(private readonly pool: Pool, private readonly target: ServerTarget) {
    this.location = target.location;
  }

  private mapped(err: unknown, connected: boolean): unknown {
    return serverError(failureOf(err, connected), this.target, err);
  }

  private session(connection: Connection): SqlSession {
    return {
      query: async <Row>(sql: string, params: unknown[] = []) => {
        const [rows] = await connection.query(sql, params);
        return Array.isArray(rows) ? { rows: rows as Row[], affected: rows.length } : { rows: [], affected: affectedOf(rows) };
      },
    };
  }

  private async connection(): Promise<Connection> {
    try {
      return await this.pool.getConnection();
    } catch (err) {
      throw this.mapped(err, false);
    }
  }

  async query<Row = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<{ rows: Row[]; affected: number }> {
    try {
      const [rows] = await this.pool.query(sql, params);
      return Array.isArray(rows) ? { rows: rows as Row[], affected: rows.length } : { rows: [], affected: affectedOf(rows) };
    } catch (err) {
      throw this.mapped(err, (err as Failure).code !== "ECONNREFUSED");
    }
  }

  async transaction<T>(work: (session: SqlSession) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const connection = await this.connection();
      let broken = false;
      try {
        // REPEATABLE READ (InnoDB's default) locks the gap where a row is missing, so two hosts
        // inserting records at once deadlock on each other's gaps; the row locks that
        // compare-and-set needs are the same under READ COMMITTED, without the gaps.
        await connection.query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED");
        await connection.beginTransaction();
        const result = await work(this.session(connection));
        await connection.commit();
        return result;
      } catch (err) {
        if (failureOf(err, true) === "lost") broken = true;
        else await connection.rollback().catch(() => (broken = true));
        if (retryable(err) && attempt < RETRIES) {
          await backOff(attempt);
          continue;
        }
        throw this.mapped(err, true);
      } finally {
        // A broken connection is closed, not given back to the pool for reuse.
        if (broken) connection.destroy();
        else connection.release();
      }
    }
  }

  async withSchemaLock<T>(work: (session: SqlSession) => Promise<T>): Promise<T> {
    // MySQL commits each schema statement by itself, so the lock is a named one held by one
    // connection while the whole upgrade runs, not a transaction's.
    const connection = await this.connection();
    try {
      const [rows] = await connection.query("SELECT GET_LOCK(?, ?) AS got", [SCHEMA_LOCK, SCHEMA_LOCK_SECONDS]);
      if (Number((rows as Array<{ got: number }>)[0]?.got) !== 1) {
        throw new Error(`another process held the schema lock for ${SCHEMA_LOCK_SECONDS} s`);
      }
      try {
        return await work(this.session(connection));
      } finally {
        await connection.query("SELECT RELEASE_LOCK(?)", [SCHEMA_LOCK]).catch(() => undefined);
      }
    } catch (err) {
      throw this.mapped(err, true);
    } finally {
      connection.release();
    }
  }

  alreadyApplied(err: unknown): boolean {
    // A table, a column or an index that is there already.
    const errno = (err as Failure).errno;
    return errno === 1050 || errno === 1060 || errno === 1061;
  }

  uniqueViolation(err: unknown): "primary" | "other" | undefined {
    const e = err as Failure;
    if (e.errno !== 1062) return undefined;
    return /for key '(?:[^']*\.)?PRIMARY'/i.test(e.message ?? "") ? "primary" : "other";
  }

  upsert(table: string, columns: string[], key: string): string {
    const others = columns.filter((c) => c !== key);
    return `INSERT INTO ${table} (${columns.join(", ")}) VALUES (${columns.map(() => "?").join(", ")}) ON DUPLICATE KEY UPDATE ${others.map((c) => `${c} = VALUES(${c})`).join(", ")}`;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** Records in MySQL or MariaDB: connects (within the timeout), creates or upgrades the schema. */
export async function openMysql(config: ServerPersistenceConfig, opts: { baseDir?: string } = {}): Promise<SqlServerPersistence> {
  const target = serverTarget(config, 3306, opts.baseDir);
  const pool = mysql.createPool({
    host: target.host,
    port: target.port,
    user: target.user,
    database: target.database,
    password: target.password,
    ssl: target.ssl,
    connectionLimit: target.poolSize,
    connectTimeout: target.timeoutMs,
    charset: "utf8mb4",
    enableKeepAlive: true,
    // Plain values in, plain values out: no multi-statements, numbers as numbers.
    multipleStatements: false,
    supportBigNumbers: true,
  });
  return SqlServerPersistence.open(new MysqlClient(pool, target));
}
