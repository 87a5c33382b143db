import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, readdir, rename, unlink } from "node:fs/promises";
import { join } from "node:path";
import type { ConnectionFilter, Persistence, SnapshotFilter, VolumeFilter } from "./contract";
import type { ConnectionRecord, KeyValueRecord, SnapshotRecord, VolumeRecord } from "./records";
import { assertUniqueName, matches } from "./shared";
import { InvalidInputError, isErrno } from "../util/errors";

type Kind = "volumes" | "snapshots" | "connections" | "keyvalues";

const SAFE_ID = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * One JSON document per object under `<dir>/<kind>/`, written atomically (temp file, fsync,
 * rename, fsync of the directory), so a crash leaves the old or the new document, never half
 * of one. File names are ids checked against a strict charset, and key-value keys are hex
 * encoded, so nothing a caller passes can name a file outside the directory. Name uniqueness
 * is checked on write; across processes that check is best-effort (use sqlite for that).
 */
export class JsonPersistence implements Persistence {
  readonly kind = "json";

  constructor(readonly dir: string) {}

  private fileOf(kind: Kind, id: string): string {
    if (kind !== "keyvalues" && !SAFE_ID.test(id)) throw new InvalidInputError("id", `${JSON.stringify(id)} is not a valid record id`);
    return join(this.dir, kind, `${kind === "keyvalues" ? Buffer.from(id, "utf8").toString("hex") : id}.json`);
  }

  private async readAll<T>(kind: Kind): Promise<T[]> {
    let names: string[];
    try {
      names = await readdir(join(this.dir, kind));
    } catch (err) {
      if (isErrno(err, "ENOENT")) return [];
      throw err;
    }
    const out: T[] = [];
    for (const name of names.filter((n) => n.endsWith(".json")).sort()) {
      try {
        out.push(JSON.parse(await readFile(join(this.dir, kind, name), "utf8")) as T);
      } catch (err) {
        if (!isErrno(err, "ENOENT")) throw err; // removed while we listed
      }
    }
    return out;
  }

  private async write(kind: Kind, id: string, value: unknown): Promise<void> {
    const folder = join(this.dir, kind);
    await mkdir(folder, { recursive: true, mode: 0o700 });
    const target = this.fileOf(kind, id);
    const temp = join(folder, `.tmp-${randomBytes(6).toString("hex")}`);
    const handle = await open(temp, "wx", 0o600);
    try {
      await handle.writeFile(JSON.stringify(value, null, 2));
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      await rename(temp, target);
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw err;
    }
    const dirHandle = await open(folder, "r");
    try {
      await dirHandle.sync();
    } finally {
      await dirHandle.close();
    }
  }

  private async remove(kind: Kind, id: string): Promise<void> {
    await unlink(this.fileOf(kind, id)).catch((err) => {
      if (!isErrno(err, "ENOENT")) throw err;
    });
  }

  async getVolumes(filter: VolumeFilter = {}): Promise<VolumeRecord[]> {
    return (await this.readAll<VolumeRecord>("volumes")).filter((v) => matches(v, filter));
  }
  async getSnapshots(filter: SnapshotFilter = {}): Promise<SnapshotRecord[]> {
    return (await this.readAll<SnapshotRecord>("snapshots")).filter((s) => matches(s, filter));
  }
  async getConnections(filter: ConnectionFilter = {}): Promise<ConnectionRecord[]> {
    return (await this.readAll<ConnectionRecord>("connections")).filter((c) => matches(c, filter));
  }
  async getKeyValues(key?: string): Promise<KeyValueRecord[]> {
    return (await this.readAll<KeyValueRecord>("keyvalues")).filter((kv) => key === undefined || kv.key === key);
  }
  async setVolume(volume: VolumeRecord): Promise<void> {
    assertUniqueName("volume", volume, await this.readAll<VolumeRecord>("volumes"));
    await this.write("volumes", volume.id, volume);
  }
  async setSnapshot(snapshot: SnapshotRecord): Promise<void> {
    assertUniqueName("snapshot", snapshot, await this.readAll<SnapshotRecord>("snapshots"));
    await this.write("snapshots", snapshot.id, snapshot);
  }
  async setConnection(connection: ConnectionRecord): Promise<void> {
    await this.write("connections", connection.id, connection);
  }
  async setKeyValue(kv: KeyValueRecord): Promise<void> {
    await this.write("keyvalues", kv.key, { key: kv.key, value: kv.value });
  }
  async deleteVolume(id: string): Promise<void> {
    await this.remove("volumes", id);
  }
  async deleteSnapshot(id: string): Promise<void> {
    await this.remove("snapshots", id);
  }
  async deleteConnection(id: string): Promise<void> {
    await this.remove("connections", id);
  }
  async deleteKeyValue(key: string): Promise<void> {
    await this.remove("keyvalues", key);
  }
  /**
   * Atomic against other callers in this process only: documents have no lock of their own.
   * Use sqlite where several processes take the same lock.
   */
  async compareAndSetKeyValue(key: string, expected: string | undefined, value: string | undefined): Promise<boolean> {
    const run = async () => {
      const [current] = await this.getKeyValues(key);
      if (current?.value !== expected) return false;
      if (value === undefined) await this.deleteKeyValue(key);
      else await this.setKeyValue({ key, value });
      return true;
    };
    const result = this.casTail.then(run, run);
    this.casTail = result.then(() => undefined, () => undefined);
    return result;
  }
  private casTail: Promise<void> = Promise.resolve();
  async close(): Promise<void> {}
}
