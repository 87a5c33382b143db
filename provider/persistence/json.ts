import { randomBytes } from "node:crypto";
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import type { ConnectionFilter, Persistence, SnapshotFilter, VolumeFilter } from "./contract";
import type { ConnectionRecord, KeyValueRecord, RecordKind, RecordTypes, SnapshotRecord, VolumeRecord } from "./records";
import { versionOf } from "./records";
import { assertUniqueName, compareAndSetAllowed, matches } from "./shared";
import { storeError } from "./errors";
import { SpaceReserve } from "./reserve";
import { InvalidInputError, isErrno } from "../util/errors";

type Folder = "volumes" | "snapshots" | "connections" | "keyvalues";

const FOLDERS: Record<RecordKind, Folder> = { volume: "volumes", snapshot: "snapshots", connection: "connections" };

const SAFE_ID = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * One JSON document per object under `<dir>/<kind>/`, written atomically (temp file, fsync,
 * rename, fsync of the directory), so a crash leaves the old or the new document, never half
 * of one. File names are ids checked against a strict charset, and key-value keys are hex
 * encoded, so nothing a caller passes can name a file outside the directory.
 *
 * Every change reads, checks and writes under one store-wide lock: an SQLite database used only
 * for its locking (`<dir>/.lock`). Its POSIX locks go with the process that held them, so a
 * `kill -9` never leaves the store locked, and they are the locks SQLite trusts on the
 * filesystems it supports. The work under the lock is synchronous, so callers in this process
 * never wait on each other while holding it.
 */
export class JsonPersistence implements Persistence {
  readonly kind = "json";
  readonly scope = "host" as const;
  readonly location: string;
  private lockDb?: DatabaseSync;
  private readonly reserve: SpaceReserve;

  constructor(readonly dir: string) {
    this.location = dir;
    this.reserve = new SpaceReserve(join(dir, ".reserve"));
    try {
      if (!statSync(dir).isDirectory()) {
        throw new InvalidInputError("persistence.path", `${dir} is a file; json persistence needs a directory`);
      }
    } catch (err) {
      if (!isErrno(err, "ENOENT")) throw storeError(err, dir);
    }
  }

  private fileOf(folder: Folder, id: string): string {
    if (folder !== "keyvalues" && !SAFE_ID.test(id)) throw new InvalidInputError("id", `${JSON.stringify(id)} is not a valid record id`);
    return join(this.dir, folder, `${folder === "keyvalues" ? Buffer.from(id, "utf8").toString("hex") : id}.json`);
  }

  private readAll<T>(folder: Folder): T[] {
    let names: string[];
    try {
      names = readdirSync(join(this.dir, folder));
    } catch (err) {
      if (isErrno(err, "ENOENT")) return [];
      throw storeError(err, this.dir);
    }
    const out: T[] = [];
    for (const name of names.filter((n) => n.endsWith(".json")).sort()) {
      try {
        out.push(JSON.parse(readFileSync(join(this.dir, folder, name), "utf8")) as T);
      } catch (err) {
        if (isErrno(err, "ENOENT")) continue; // removed while we listed
        if (err instanceof SyntaxError) {
          throw storeError(Object.assign(new Error(`${join(folder, name)} is not valid JSON`), { code: "ECORRUPT" }), this.dir);
        }
        throw storeError(err, this.dir);
      }
    }
    return out;
  }

  private readOne<T>(folder: Folder, id: string): T | undefined {
    try {
      return JSON.parse(readFileSync(this.fileOf(folder, id), "utf8")) as T;
    } catch (err) {
      if (isErrno(err, "ENOENT")) return undefined;
      throw storeError(err, this.dir);
    }
  }

  private write(folder: Folder, id: string, value: unknown): void {
    const target = this.fileOf(folder, id);
    const dir = join(this.dir, folder);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const temp = join(dir, `.tmp-${randomBytes(6).toString("hex")}`);
    const fd = openSync(temp, "wx", 0o600);
    try {
      try {
        writeSync(fd, JSON.stringify(value, null, 2));
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(temp, target);
    } catch (err) {
      try {
        unlinkSync(temp);
      } catch {
        // already renamed, or never made
      }
      throw err;
    }
    const dirFd = openSync(dir, "r");
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
  }

  private remove(folder: Folder, id: string): void {
    try {
      unlinkSync(this.fileOf(folder, id));
    } catch (err) {
      if (!isErrno(err, "ENOENT")) throw err;
    }
  }

  /** Runs a change under the store-wide lock; the lock is SQLite's, so it dies with its holder. */
  private locked<T>(work: () => T): T {
    try {
      if (!this.lockDb) {
        mkdirSync(this.dir, { recursive: true, mode: 0o700 });
        this.lockDb = new DatabaseSync(join(this.dir, ".lock"), { timeout: 10_000 });
        this.reserve.ensure();
      }
      this.lockDb.exec("BEGIN EXCLUSIVE");
    } catch (err) {
      throw storeError(err, this.dir);
    }
    try {
      return work();
    } catch (err) {
      throw storeError(err, this.dir);
    } finally {
      this.lockDb.exec("ROLLBACK");
    }
  }

  async getVolumes(filter: VolumeFilter = {}): Promise<VolumeRecord[]> {
    return this.readAll<VolumeRecord>("volumes").filter((v) => matches(v, filter));
  }
  async getSnapshots(filter: SnapshotFilter = {}): Promise<SnapshotRecord[]> {
    return this.readAll<SnapshotRecord>("snapshots").filter((s) => matches(s, filter));
  }
  async getConnections(filter: ConnectionFilter = {}): Promise<ConnectionRecord[]> {
    return this.readAll<ConnectionRecord>("connections").filter((c) => matches(c, filter));
  }
  async getKeyValues(key?: string): Promise<KeyValueRecord[]> {
    return this.readAll<KeyValueRecord>("keyvalues").filter((kv) => key === undefined || kv.key === key);
  }

  async compareAndSetRecord<K extends RecordKind>(kind: K, record: RecordTypes[K], expected: number): Promise<boolean> {
    const folder = FOLDERS[kind];
    return this.locked(() => {
      const current = this.readOne<RecordTypes[K]>(folder, record.id);
      const named = (r: RecordTypes[K]) => ({ id: r.id, backend: r.backend, name: "name" in r ? r.name : r.id, version: r.version });
      if (!compareAndSetAllowed(kind, named(record), expected, current && named(current), () => this.readAll<RecordTypes[K]>(folder).map(named))) return false;
      this.write(folder, record.id, record);
      return true;
    });
  }
  async compareAndDeleteRecord(kind: RecordKind, id: string, expected: number): Promise<boolean> {
    const folder = FOLDERS[kind];
    return this.locked(() => {
      const current = this.readOne<RecordTypes[RecordKind]>(folder, id);
      if (!current || versionOf(current) !== expected) return false;
      this.remove(folder, id);
      return true;
    });
  }

  async setVolume(volume: VolumeRecord): Promise<void> {
    this.locked(() => {
      assertUniqueName("volume", volume, this.readAll<VolumeRecord>("volumes"));
      this.write("volumes", volume.id, volume);
    });
  }
  async setSnapshot(snapshot: SnapshotRecord): Promise<void> {
    this.locked(() => {
      assertUniqueName("snapshot", snapshot, this.readAll<SnapshotRecord>("snapshots"));
      this.write("snapshots", snapshot.id, snapshot);
    });
  }
  async setConnection(connection: ConnectionRecord): Promise<void> {
    this.locked(() => this.write("connections", connection.id, connection));
  }
  async setKeyValue(kv: KeyValueRecord): Promise<void> {
    this.locked(() => this.write("keyvalues", kv.key, { key: kv.key, value: kv.value }));
  }
  async deleteVolume(id: string): Promise<void> {
    this.locked(() => this.remove("volumes", id));
  }
  async deleteSnapshot(id: string): Promise<void> {
    this.locked(() => this.remove("snapshots", id));
  }
  async deleteConnection(id: string): Promise<void> {
    this.locked(() => this.remove("connections", id));
  }
  async deleteKeyValue(key: string): Promise<void> {
    this.locked(() => this.remove("keyvalues", key));
  }
  async compareAndSetKeyValue(key: string, expected: string | undefined, value: string | undefined): Promise<boolean> {
    return this.locked(() => {
      const current = this.readOne<KeyValueRecord>("keyvalues", key);
      if (current?.value !== expected) return false;
      if (value === undefined) this.remove("keyvalues", key);
      else this.write("keyvalues", key, { key, value });
      return true;
    });
  }

  async releaseReserve(): Promise<boolean> {
    return this.reserve.release();
  }
  async restoreReserve(): Promise<void> {
    this.reserve.ensure();
  }

  async close(): Promise<void> {
    if (this.lockDb?.isOpen) this.lockDb.close();
    this.lockDb = undefined;
  }
}
