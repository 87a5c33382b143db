import { accessSync, chmodSync, constants as fsConstants, mkdirSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { pathToFileURL } from "node:url";
import { DatabaseSync } from "node:sqlite";
import type { ConnectionFilter, Persistence, SnapshotFilter, VolumeFilter } from "./contract";
import type { ConnectionRecord, KeyValueRecord, RecordKind, RecordTypes, SnapshotRecord, VolumeRecord } from "./records";
import { nameTaken } from "./shared";
import { SCHEMA_VERSION, stepAfter } from "./sql/migrations";
import { TABLES, recordColumns } from "./sql/columns";
import { isNoSpace, storeError } from "./errors";
import { SpaceReserve } from "./reserve";
import { BackendError, InvalidInputError, NoSpaceError, isErrno } from "../util/errors";

type Row = { doc: string };

/**
 * The embedded default: one SQLite file, shared safely by the processes of one host (the
 * command, a daemon, a Pulumi run). WAL lets readers work beside a writer; busy_timeout makes a
 * second writer wait instead of failing; every change is one IMMEDIATE transaction, so a
 * compare-and-set reads and writes with no other writer in between. Not for several hosts:
 * SQLite's locks are not safe on network filesystems.
 */
export class SqlitePersistence implements Persistence {
  readonly kind = "sqlite";
  readonly scope = "host" as const;
  readonly location: string;
  private readonly db: DatabaseSync;
  /** Opened read-only (a read-only mount, an immutable file): listing works, changes are refused. */
  readonly readOnly: boolean;
  private readonly reserve: SpaceReserve;
  /** Opened on the reserve: until there is room again, only changes that free space are written. */
  private lowOnSpace = false;
  /** A change that frees space is being written (see releaseReserve). */
  private freeing = false;

  constructor(readonly path: string) {
    this.location = path;
    this.reserve = new SpaceReserve(`${path}.reserve`);
    try {
      if (statSync(path).isDirectory()) {
        throw new InvalidInputError("persistence.path", `${path} is a directory; sqlite needs a database file path (e.g. ${path}/kindling.db)`);
      }
    } catch (err) {
      if (!isErrno(err, "ENOENT")) throw storeError(err, path);
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    }
    // On a full filesystem even opening fails (SQLite grows its shared-memory file). The reserve
    // is there for that: it is spent to open, and the store then records only what frees space
    // (deletes) until there is room again.
    let opened: { db: DatabaseSync; readOnly: boolean };
    try {
      opened = this.open();
    } catch (err) {
      if (!isNoSpace(err) || !this.reserve.release()) throw err;
      opened = this.open();
      this.lowOnSpace = true;
    }
    this.db = opened.db;
    this.readOnly = opened.readOnly;
  }

  /** Opens the database, sets it up, and says whether it can be written. */
  private open(): { db: DatabaseSync; readOnly: boolean } {
    try {
      return this.setUp(new DatabaseSync(this.path, { timeout: 10_000 }), false);
    } catch (err) {
      // A read-only mount: SQLite cannot make the files a WAL database needs beside it. Nothing
      // can change the file there, so it is read as immutable (listing works, changes do not).
      if (!readOnlyMedium(this.path)) throw storeError(err, this.path);
      const url = pathToFileURL(this.path);
      url.searchParams.set("immutable", "1");
      try {
        return this.setUp(new DatabaseSync(url, { readOnly: true }), true);
      } catch (again) {
        throw storeError(again, this.path);
      }
    }
  }

  private setUp(db: DatabaseSync, immutable: boolean): { db: DatabaseSync; readOnly: boolean } {
    try {
      const readOnly = immutable || !writable(db);
      if (!readOnly) {
        restrictMode(this.path); // records hold connection info
        db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;");
      }
      const opened = { db, readOnly };
      this.migrate(opened);
      if (!readOnly) this.reserve.ensure();
      return opened;
    } catch (err) {
      db.close();
      throw err;
    }
  }

  private schemaVersion(db: DatabaseSync = this.db): number {
    return (db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version;
  }

  /** Runs the migrations this database has not seen, in one transaction; checks the version. */
  private migrate({ db, readOnly }: { db: DatabaseSync; readOnly: boolean }): void {
    const version = this.schemaVersion(db);
    if (version > SCHEMA_VERSION) {
      throw new BackendError(`${this.path} has schema version ${version}, newer than this kindling knows (${SCHEMA_VERSION})`, {
        hint: "upgrade kindling, or point it at another database",
      });
    }
    if (version === SCHEMA_VERSION) return;
    if (readOnly) {
      throw new BackendError(`the records store ${this.path} is read-only and has schema version ${version}; this kindling needs ${SCHEMA_VERSION}`, {
        hint: "open it once with write access so kindling can upgrade it",
      });
    }
    db.exec("BEGIN IMMEDIATE");
    try {
      // Another process may have migrated it while this one waited for the lock.
      const now = this.schemaVersion(db);
      for (let v = now; v < SCHEMA_VERSION; v++) for (const statement of stepAfter(v, "sqlite").statements) db.exec(statement);
      if (now < SCHEMA_VERSION) db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
      db.exec("COMMIT");
    } catch (err) {
      if (db.isTransaction) db.exec("ROLLBACK");
      throw err;
    }
  }

  private transaction<T>(work: () => T): T {
    if (this.readOnly) {
      throw new BackendError(`the records store ${this.path} is read-only`, { hint: "listing works; changes need write access to it" });
    }
    if (this.lowOnSpace && !this.freeing) {
      throw new NoSpaceError(`the records store ${this.path} has no space left on its filesystem`, {
        hint: "free space there; deleting volumes and snapshots still works",
      });
    }
    try {
      this.db.exec("BEGIN IMMEDIATE");
      try {
        const result = work();
        this.db.exec("COMMIT");
        return result;
      } catch (err) {
        // SQLite has already rolled back after some errors (SQLITE_FULL among them): a second
        // ROLLBACK would fail and its "no transaction is active" would hide the real error.
        if (this.db.isTransaction) {
          try {
            this.db.exec("ROLLBACK");
          } catch {
            // The original error is the one worth reporting.
          }
        }
        throw err;
      }
    } catch (err) {
      throw storeError(err, this.path);
    }
  }

  private read<T>(work: () => T): T {
    try {
      return work();
    } catch (err) {
      throw storeError(err, this.path);
    }
  }

  /** SELECT doc FROM table WHERE the set filter columns match. */
  private select<T>(table: string, columns: Record<string, string | undefined>): T[] {
    const where = Object.entries(columns).filter(([, v]) => v !== undefined);
    const sql = `SELECT doc FROM ${table}${where.length ? ` WHERE ${where.map(([c]) => `${c} = ?`).join(" AND ")}` : ""} ORDER BY id`;
    return this.read(() => (this.db.prepare(sql).all(...where.map(([, v]) => v as string)) as Row[]).map((r) => JSON.parse(r.doc) as T));
  }

  /** Refuses a name another record of the backend holds (REPLACE would silently drop that row). */
  private checkName(kind: RecordKind, columns: Record<string, string | number>): void {
    if (kind === "connection") return;
    const clash = this.db.prepare(`SELECT id FROM ${TABLES[kind]} WHERE backend = ? AND name = ? AND id != ?`).get(columns.backend, columns.name, columns.id);
    if (clash) throw nameTaken(kind, String(columns.name), String(columns.backend));
  }

  private write(kind: RecordKind, columns: Record<string, string | number>): void {
    const names = Object.keys(columns);
    this.db.prepare(`INSERT OR REPLACE INTO ${TABLES[kind]} (${names.join(", ")}) VALUES (${names.map(() => "?").join(", ")})`).run(...Object.values(columns));
  }

  private upsert<K extends RecordKind>(kind: K, record: RecordTypes[K]): void {
    const columns = recordColumns(kind, record);
    this.transaction(() => {
      this.checkName(kind, columns);
      this.write(kind, columns);
    });
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
    const rows = this.read(() => key === undefined
      ? this.db.prepare("SELECT key, value FROM key_values ORDER BY key").all()
      : this.db.prepare("SELECT key, value FROM key_values WHERE key = ?").all(key));
    return (rows as unknown as KeyValueRecord[]).map((r) => ({ key: r.key, value: r.value }));
  }

  async compareAndSetRecord<K extends RecordKind>(kind: K, record: RecordTypes[K], expected: number): Promise<boolean> {
    const columns = recordColumns(kind, record);
    return this.transaction(() => {
      const row = this.db.prepare(`SELECT version, ${kind === "connection" ? "NULL AS name" : "name"} FROM ${TABLES[kind]} WHERE id = ?`).get(record.id) as
        { version: number; name: string | null } | undefined;
      if (expected === 0 ? row !== undefined : row?.version !== expected) return false;
      if (!row || row.name !== columns.name) this.checkName(kind, columns);
      this.write(kind, columns);
      return true;
    });
  }
  async compareAndDeleteRecord(kind: RecordKind, id: string, expected: number): Promise<boolean> {
    return this.transaction(() => {
      const result = this.db.prepare(`DELETE FROM ${TABLES[kind]} WHERE id = ? AND version = ?`).run(id, expected);
      return Number(result.changes) === 1;
    });
  }

  async setVolume(v: VolumeRecord): Promise<void> {
    this.upsert("volume", v);
  }
  async setSnapshot(s: SnapshotRecord): Promise<void> {
    this.upsert("snapshot", s);
  }
  async setConnection(c: ConnectionRecord): Promise<void> {
    this.upsert("connection", c);
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

  async releaseReserve(): Promise<boolean> {
    // Opened on the reserve, it is spent already: this change may use what it freed.
    const spent = this.lowOnSpace || this.reserve.release();
    if (spent) this.freeing = true;
    return spent;
  }
  async restoreReserve(): Promise<void> {
    this.freeing = false;
    if (this.readOnly) return;
    this.reserve.ensure();
    if (this.reserve.present()) this.lowOnSpace = false;
  }

  async close(): Promise<void> {
    if (this.db.isOpen) this.db.close();
  }

  /** For tests and diagnostics: the schema version and journal mode in force. */
  info(): { userVersion: number; journalMode: string; migrations: number } {
    const { journal_mode } = this.db.prepare("PRAGMA journal_mode").get() as { journal_mode: string };
    return { userVersion: this.schemaVersion(), journalMode: journal_mode, migrations: SCHEMA_VERSION };
  }
}

/** SQLite opens a file it may not write read-only without a word; find out here. */
function writable(db: DatabaseSync): boolean {
  try {
    db.exec("BEGIN IMMEDIATE");
    db.exec("ROLLBACK");
    return true;
  } catch (err) {
    const code = (err as { errcode?: number }).errcode;
    if (code !== undefined && (code & 0xff) === 8) return false; // SQLITE_READONLY
    throw err;
  }
}

/** The database's directory cannot be written (a read-only mount, no permission). */
function readOnlyMedium(path: string): boolean {
  try {
    accessSync(dirname(path), fsConstants.W_OK);
    return false;
  } catch (err) {
    return isErrno(err, "EROFS", "EACCES", "EPERM");
  }
}

/** 0600 where it is not already; an owner who may not chmod still gets a working store. */
function restrictMode(path: string): void {
  try {
    if ((statSync(path).mode & 0o777) !== 0o600) chmodSync(path, 0o600);
  } catch (err) {
    if (!isErrno(err, "EPERM", "EROFS", "EACCES")) throw err;
  }
}
