import type { ConnectionFilter, Persistence, SnapshotFilter, VolumeFilter } from "../contract";
import type { ConnectionRecord, KeyValueRecord, RecordKind, RecordTypes, SnapshotRecord, VolumeRecord } from "../records";
import { nameTaken } from "../shared";
import { BackendError, InvalidInputError } from "../../util/errors";
import type { SqlClient, SqlSession } from "./client";
import { SCHEMA_VERSION, quoteKey, stepAfter } from "./migrations";
import { TABLES, recordColumns } from "./columns";

/** Key-value keys are a primary key: bounded so every server can index them. */
const MAX_KEY_LENGTH = 700;

/**
 * Records in a database server (PostgreSQL, MySQL or MariaDB), shared by every host that
 * reaches it: the guarantees the contract asks for hold across hosts because the server gives
 * them. Every compare-and-set is one transaction that locks the row it reads (SELECT ... FOR
 * UPDATE), so no other host changes it in between; inserts that race meet the primary key or
 * the unique name, and the loser gets "false" or a ConflictError, never a second row. Schema
 * changes run under the server's lock for them, so hosts upgrading at once take turns.
 */
export class SqlServerPersistence implements Persistence {
  readonly scope = "hosts" as const;
  readonly location: string;
  private readonly key: string;

  private constructor(
    readonly kind: "postgres" | "mysql",
    private readonly client: SqlClient,
  ) {
    this.location = client.location;
    this.key = quoteKey(client.dialect);
  }

  /** Connects, creates or upgrades the schema, and returns the store. */
  static async open(client: SqlClient): Promise<SqlServerPersistence> {
    const store = new SqlServerPersistence(client.dialect, client);
    try {
      await store.migrate();
    } catch (err) {
      await client.close().catch(() => undefined);
      throw err;
    }
    return store;
  }

  /** The schema version the database is at (for tests and diagnostics). */
  async schemaVersion(): Promise<number> {
    const { rows } = await this.client.query<{ version: number }>("SELECT version FROM kindling_schema");
    return Number(rows[0]?.version ?? 0);
  }

  private async migrate(): Promise<void> {
    await this.client.withSchemaLock(async (s) => {
      await s.query("CREATE TABLE IF NOT EXISTS kindling_schema (version INTEGER NOT NULL)");
      const { rows } = await s.query<{ version: number }>("SELECT version FROM kindling_schema");
      if (!rows.length) await s.query("INSERT INTO kindling_schema (version) VALUES (0)");
      const version = Number(rows[0]?.version ?? 0);
      if (version > SCHEMA_VERSION) {
        throw new BackendError(`the records store ${this.location} has schema version ${version}, newer than this kindling knows (${SCHEMA_VERSION})`, {
          hint: "upgrade kindling, or point it at another database",
        });
      }
      for (let v = version; v < SCHEMA_VERSION; v++) {
        for (const statement of stepAfter(v, this.client.dialect).statements) {
          try {
            await s.query(statement);
          } catch (err) {
            // MySQL commits each schema statement by itself: a step a crash cut short has some
            // of its statements done already, and runs again from the start.
            if (!this.client.alreadyApplied(err)) throw err;
          }
        }
        await s.query("UPDATE kindling_schema SET version = ?", [v + 1]);
      }
    });
  }

  private async select<T>(table: string, columns: Record<string, string | undefined>): Promise<T[]> {
    const where = Object.entries(columns).filter(([, v]) => v !== undefined);
    const sql = `SELECT doc FROM ${table}${where.length ? ` WHERE ${where.map(([c]) => `${c} = ?`).join(" AND ")}` : ""} ORDER BY id`;
    const { rows } = await this.client.query<{ doc: string }>(sql, where.map(([, v]) => v));
    return rows.map((r) => JSON.parse(r.doc) as T);
  }

  /** Refuses a name another record of the backend holds. */
  private async checkName(s: SqlSession, kind: RecordKind, columns: Record<string, string | number>): Promise<void> {
    if (kind === "connection") return;
    const { rows } = await s.query(`SELECT id FROM ${TABLES[kind]} WHERE backend = ? AND name = ? AND id <> ?`, [columns.backend, columns.name, columns.id]);
    if (rows.length) throw nameTaken(kind, String(columns.name), String(columns.backend));
  }

  /** An INSERT that lost a race: the primary key means "there is one already", a name a ConflictError. */
  private raced(err: unknown, kind: RecordKind, columns: Record<string, string | number>): false {
    const broke = this.client.uniqueViolation(err);
    if (broke === "primary") return false;
    if (broke === "other" && kind !== "connection") throw nameTaken(kind, String(columns.name), String(columns.backend));
    throw err;
  }

  private checkKey(key: string): void {
    if (key.length > MAX_KEY_LENGTH) throw new InvalidInputError("key", `key-value keys are at most ${MAX_KEY_LENGTH} characters in a ${this.kind} store`);
  }

  async getVolumes(filter: VolumeFilter = {}): Promise<VolumeRecord[]> {
    return this.select("volumes", { id: filter.id, name: filter.name, backend: filter.backend });
  }
  async getSnapshots(filter: SnapshotFilter = {}): Promise<SnapshotRecord[]> {
    return this.select("snapshots", { id: filter.id, name: filter.name, volume_id: filter.volumeId, backend: filter.backend });
  }
  async getConnections(filter: ConnectionFilter = {}): Promise<ConnectionRecord[]> {
    return this.select("connections", { id: filter.id, volume_id: filter.volumeId, backend: filter.backend });
  }
  async getKeyValues(key?: string): Promise<KeyValueRecord[]> {
    const { rows } = key === undefined
      ? await this.client.query<KeyValueRecord>(`SELECT ${this.key}, value FROM key_values ORDER BY ${this.key}`)
      : await this.client.query<KeyValueRecord>(`SELECT ${this.key}, value FROM key_values WHERE ${this.key} = ?`, [key]);
    return rows.map((r) => ({ key: r.key, value: r.value }));
  }

  async compareAndSetRecord<K extends RecordKind>(kind: K, record: RecordTypes[K], expected: number): Promise<boolean> {
    const table = TABLES[kind];
    const columns = recordColumns(kind, record);
    const names = Object.keys(columns);
    return this.client.transaction(async (s) => {
      const { rows } = await s.query<{ version: number; name?: string }>(`SELECT version${kind === "connection" ? "" : ", name"} FROM ${table} WHERE id = ? FOR UPDATE`, [record.id]);
      const row = rows[0];
      if (expected === 0 ? row !== undefined : row === undefined || Number(row.version) !== expected) return false;
      if (!row || row.name !== columns.name) await this.checkName(s, kind, columns);
      try {
        if (row) await s.query(`UPDATE ${table} SET ${names.map((n) => `${n} = ?`).join(", ")} WHERE id = ?`, [...Object.values(columns), record.id]);
        else await s.query(`INSERT INTO ${table} (${names.join(", ")}) VALUES (${names.map(() => "?").join(", ")})`, Object.values(columns));
      } catch (err) {
        return this.raced(err, kind, columns);
      }
      return true;
    });
  }

  async compareAndDeleteRecord(kind: RecordKind, id: string, expected: number): Promise<boolean> {
    const { affected } = await this.client.query(`DELETE FROM ${TABLES[kind]} WHERE id = ? AND version = ?`, [id, expected]);
    return affected === 1;
  }

  async compareAndSetKeyValue(key: string, expected: string | undefined, value: string | undefined): Promise<boolean> {
    this.checkKey(key);
    return this.client.transaction(async (s) => {
      const { rows } = await s.query<{ value: string }>(`SELECT value FROM key_values WHERE ${this.key} = ? FOR UPDATE`, [key]);
      if (rows[0]?.value !== expected) return false;
      if (value === undefined) await s.query(`DELETE FROM key_values WHERE ${this.key} = ?`, [key]);
      else if (rows.length) await s.query(`UPDATE key_values SET value = ? WHERE ${this.key} = ?`, [value, key]);
      else {
        try {
          await s.query(`INSERT INTO key_values (${this.key}, value) VALUES (?, ?)`, [key, value]);
        } catch (err) {
          if (this.client.uniqueViolation(err) === "primary") return false; // another one set it first
          throw err;
        }
      }
      return true;
    });
  }

  private async upsert<K extends RecordKind>(kind: K, record: RecordTypes[K]): Promise<void> {
    const columns = recordColumns(kind, record);
    await this.client.transaction(async (s) => {
      await this.checkName(s, kind, columns);
      try {
        await s.query(this.client.upsert(TABLES[kind], Object.keys(columns), "id"), Object.values(columns));
      } catch (err) {
        this.raced(err, kind, columns);
      }
    });
  }

  async setVolume(volume: VolumeRecord): Promise<void> {
    await this.upsert("volume", volume);
  }
  async setSnapshot(snapshot: SnapshotRecord): Promise<void> {
    await this.upsert("snapshot", snapshot);
  }
  async setConnection(connection: ConnectionRecord): Promise<void> {
    await this.upsert("connection", connection);
  }
  async setKeyValue(kv: KeyValueRecord): Promise<void> {
    this.checkKey(kv.key);
    await this.client.query(this.client.upsert("key_values", [this.key, "value"], this.key), [kv.key, kv.value]);
  }
  async deleteVolume(id: string): Promise<void> {
    await this.client.query("DELETE FROM volumes WHERE id = ?", [id]);
  }
  async deleteSnapshot(id: string): Promise<void> {
    await this.client.query("DELETE FROM snapshots WHERE id = ?", [id]);
  }
  async deleteConnection(id: string): Promise<void> {
    await this.client.query("DELETE FROM connections WHERE id = ?", [id]);
  }
  async deleteKeyValue(key: string): Promise<void> {
    await this.client.query(`DELETE FROM key_values WHERE ${this.key} = ?`, [key]);
  }

  async close(): Promise<void> {
    await this.client.close();
  }
}
