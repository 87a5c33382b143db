import { chmodSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { DatabaseSync } from "node:sqlite";
import type { ConnectionFilter, Persistence, SnapshotFilter, VolumeFilter } from "./contract";
import type { ConnectionRecord, KeyValueRecord, SnapshotRecord, VolumeRecord } from "./records";
import { nameTaken } from "./shared";
import { BackendError } from "../util/errors";

/**
 * Schema changes, in order; `PRAGMA user_version` counts how many have run. Append only: a
 * released migration never changes. Records are stored whole as JSON (`doc`) with the columns
 * that filters and constraints need beside it.
 */
const MIGRATIONS: string[] = [
  `CREATE TABLE volumes (
     id TEXT PRIMARY KEY, backend TEXT NOT NULL, name TEXT NOT NULL, doc TEXT NOT NULL,
     UNIQUE (backend, name));
   CREATE TABLE snapshots (
     id TEXT PRIMARY KEY, backend TEXT NOT NULL, name TEXT NOT NULL, volume_id TEXT NOT NULL, doc TEXT NOT NULL,
     UNIQUE (backend, name));
   CREATE INDEX snapshots_volume ON snapshots (volume_id);
   CREATE TABLE connections (
     id TEXT PRIMARY KEY, backend TEXT NOT NULL, volume_id TEXT NOT NULL, doc TEXT NOT NULL);
   CREATE INDEX connections_volume ON connections (volume_id);
   CREATE TABLE key_values (key TEXT PRIMARY KEY, value TEXT NOT NULL);`,
];

type Row = { doc: string };

/**
 * The embedded default: one SQLite file, shared safely by several processes (the command, a
 * daemon, a Pulumi run). WAL lets readers work beside a writer; busy_timeout makes a second
 * writer wait instead of failing; every change is one IMMEDIATE transaction.
 */
export class SqlitePersistence implements Persistence {
  readonly kind = "sqlite";
  private readonly db: DatabaseSync;

  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.db = new DatabaseSync(path, { timeout: 10_000 });
    try {
      chmodSync(path, 0o600); // records hold connection info
      this.db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;");
      this.migrate();
    } catch (err) {
      this.db.close();
      throw err;
    }
  }

  /** Runs the migrations this database has not seen, in one transaction. */
  private migrate(): void {
    this.transaction(() => {
      const { user_version: version } = this.db.prepare("PRAGMA user_version").get() as { user_version: number };
      if (version > MIGRATIONS.length) {
        throw new BackendError(`${this.path} has schema version ${version}, newer than this kindling knows (${MIGRATIONS.length})`, {
          hint: "upgrade kindling, or point it at another database",
        });
      }
      for (let v = version; v < MIGRATIONS.length; v++) this.db.exec(MIGRATIONS[v]);
      if (version < MIGRATIONS.length) this.db.exec(`PRAGMA user_version = ${MIGRATIONS.length}`);
    });
  }

  private transaction<T>(work: () => T): T {
    this.db.exec("BEGIN IMMEDIATE");
    try {
      const result = work();
      this.db.exec("COMMIT");
      return result;
    } catch (err) {
      this.db.exec("ROLLBACK");
      throw err;
    }
  }

  /** SELECT doc FROM table WHERE the set filter columns match. */
  private select<T>(table: string, columns: Record<string, string | undefined>): T[] {
    const where = Object.entries(columns).filter(([, v]) => v !== undefined);
    const sql = `SELECT doc FROM ${table}${where.length ? ` WHERE ${where.map(([c]) => `${c} = ?`).join(" AND ")}` : ""} ORDER BY id`;
    return (this.db.prepare(sql).all(...where.map(([, v]) => v as string)) as Row[]).map((r) => JSON.parse(r.doc) as T);
  }

  private upsert(table: string, columns: Record<string, string>, kind?: "volume" | "snapshot"): void {
    const names = Object.keys(columns);
    const sql = `INSERT OR REPLACE INTO ${table} (${names.join(", ")}) VALUES (${names.map(() => "?").join(", ")})`;
    try {
      this.transaction(() => {
        // REPLACE would silently drop another row holding the same (backend, name): look first.
        if (kind) {
          const clash = this.db.prepare(`SELECT id FROM ${table} WHERE backend = ? AND name = ? AND id != ?`).get(columns.backend, columns.name, columns.id);
          if (clash) throw nameTaken(kind, columns.name, columns.backend);
        }
        this.db.prepare(sql).run(...Object.values(columns));
      });
    } catch (err) {
      if (kind && /UNIQUE constraint failed/.test(String(err))) throw nameTaken(kind, columns.name, columns.backend);
      throw err;
    }
  }

  private remove(table: string, column: string, value: string): void {
    this.transaction(() => this.db.prepare(`DELETE FROM ${table} WHERE ${column} = ?`).run(value));
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
    const rows = key === undefined
      ? this.db.prepare("SELECT key, value FROM key_values ORDER BY key").all()
      : this.db.prepare("SELECT key, value FROM key_values WHERE key = ?").all(key);
    return (rows as unknown as KeyValueRecord[]).map((r) => ({ key: r.key, value: r.value }));
  }
  async setVolume(v: VolumeRecord): Promise<void> {
    this.upsert("volumes", { id: v.id, backend: v.backend, name: v.name, doc: JSON.stringify(v) }, "volume");
  }
  async setSnapshot(s: SnapshotRecord): Promise<void> {
    this.upsert("snapshots", { id: s.id, backend: s.backend, name: s.name, volume_id: s.volumeId, doc: JSON.stringify(s) }, "snapshot");
  }
  async setConnection(c: ConnectionRecord): Promise<void> {
    this.upsert("connections", { id: c.id, backend: c.backend, volume_id: c.volumeId, doc: JSON.stringify(c) });
  }
  async setKeyValue(kv: KeyValueRecord): Promise<void> {
    this.transaction(() => this.db.prepare("INSERT OR REPLACE INTO key_values (key, value) VALUES (?, ?)").run(kv.key, kv.value));
  }
  async deleteVolume(id: string): Promise<void> {
    this.remove("volumes", "id", id);
  }
  async deleteSnapshot(id: string): Promise<void> {
    this.remove("snapshots", "id", id);
  }
  async deleteConnection(id: string): Promise<void> {
    this.remove("connections", "id", id);
  }
  async deleteKeyValue(key: string): Promise<void> {
    this.remove("key_values", "key", key);
  }
  async compareAndSetKeyValue(key: string, expected: string | undefined, value: string | undefined): Promise<boolean> {
    // IMMEDIATE takes the write lock first, so no other process can change the row in between.
    return this.transaction(() => {
      const row = this.db.prepare("SELECT value FROM key_values WHERE key = ?").get(key) as { value: string } | undefined;
      if (row?.value !== expected) return false;
      if (value === undefined) this.db.prepare("DELETE FROM key_values WHERE key = ?").run(key);
      else this.db.prepare("INSERT OR REPLACE INTO key_values (key, value) VALUES (?, ?)").run(key, value);
      return true;
    });
  }
  async close(): Promise<void> {
    if (this.db.isOpen) this.db.close();
  }

  /** For tests and diagnostics: the schema version and journal mode in force. */
  info(): { userVersion: number; journalMode: string; migrations: number } {
    const { user_version } = this.db.prepare("PRAGMA user_version").get() as { user_version: number };
    const { journal_mode } = this.db.prepare("PRAGMA journal_mode").get() as { journal_mode: string };
    return { userVersion: user_version, journalMode: journal_mode, migrations: MIGRATIONS.length };
  }
}
