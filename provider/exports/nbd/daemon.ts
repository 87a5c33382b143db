import type { BackendSet } from "../../library/config";
import type { Backend } from "../../library/backend";
import type { Connection } from "../../library/connection";
import { errorMessage } from "../../util/errors";
import { logger } from "../../util/log";
import type { ExportSource } from "./exports";
import { WriterLocks } from "./lock";
import { NbdServer } from "./server";
import type { TlsSettings } from "./tls";

interface Served {
  key: string;
  source: ExportSource;
  aliases: string[];
  backend: Backend;
  /** The volume whose writer lock this export holds, for read-write exports. */
  lockedVolume?: string;
}

/**
 * `kindling nbd serve`: serves every volume and snapshot that has an `nbd` connection in the
 * configured backends' records. It looks again every `pollMs`, so exports added or removed
 * (by `kindling connect`, a Pulumi Attachment) take effect without a restart, and a restarted
 * server finds them all again. Read-write exports take the volume's writer lock.
 */
export class ExportDaemon {
  readonly server: NbdServer;
  readonly locks: WriterLocks;
  private readonly served = new Map<string, Served>();
  private timer?: NodeJS.Timeout;
  private syncing = Promise.resolve();

  constructor(
    private readonly backends: BackendSet,
    opts: { host?: string; port?: number; pollMs?: number; staleMs?: number; tls?: TlsSettings } = {},
  ) {
    this.server = new NbdServer({ host: opts.host, port: opts.port, tls: opts.tls });
    this.locks = new WriterLocks(opts.staleMs);
    this.pollMs = opts.pollMs ?? 1000;
  }

  private readonly pollMs: number;

  async start(): Promise<{ host: string; port: number }> {
    await this.sync();
    const address = await this.server.listen();
    this.timer = setInterval(() => void this.sync(), this.pollMs);
    return address;
  }

  /** Brings the export table in line with the records (one sync at a time). */
  sync(): Promise<void> {
    this.syncing = this.syncing.then(() => this.syncOnce()).catch((err) => logger().error({ err: errorMessage(err) }, "nbd export sync failed"));
    return this.syncing;
  }

  private async syncOnce(): Promise<void> {
    const wanted = new Map<string, { backend: Backend; connection: Connection }>();
    for (const name of this.backends.names()) {
      const backend = this.backends.get(name);
      for (const connection of await backend.connections()) {
        if (connection.protocol === "nbd") wanted.set(`${name}/${connection.id}`, { backend, connection });
      }
    }
    for (const [key, served] of this.served) {
      if (!wanted.has(key)) await this.remove(key, served);
    }
    for (const [key, { backend, connection }] of wanted) {
      const existing = this.served.get(key);
      if (existing) {
        if (existing.lockedVolume) await this.locks.acquire(backend.persistence, existing.lockedVolume); // heartbeat
        continue;
      }
      await this.add(key, backend, connection).catch((err) => logger().error({ export: key, err: errorMessage(err) }, "cannot export"));
    }
  }

  private async add(key: string, backend: Backend, connection: Connection): Promise<void> {
    if (connection.snapshotId) {
      const snapshot = await backend.getSnapshot(connection.snapshotId);
      const source: ExportSource = { name: snapshot.id, description: `snapshot ${snapshot.name}`, readOnly: true, open: () => snapshot.open() };
      this.publish({ key, source, aliases: [snapshot.name], backend });
      return;
    }
    const volume = await backend.getVolume(connection.volumeId);
    const readOnly = connection.attachMode === "ro";
    if (!readOnly) {
      const lock = await this.locks.acquire(backend.persistence, volume.id);
      if (!lock.ok) {
        logger().error({ volume: volume.name, holder: lock.holder }, "volume is exported read-write by another server; not exporting it here");
        return;
      }
    }
    const source: ExportSource = {
      name: volume.id,
      description: `volume ${volume.name}`,
      readOnly,
      open: () => volume.open({ readOnly }),
      qos: volume.qosSpecs,
    };
    this.publish({ key, source, aliases: [volume.name], backend, lockedVolume: readOnly ? undefined : volume.id });
  }

  private publish(served: Served): void {
    // A name already taken by another export (two backends, same volume name) stays with the first.
    const aliases = served.aliases.filter((a) => !this.server.exports.get(a));
    this.server.exports.set(served.source, aliases);
    this.served.set(served.key, served);
    logger().info({ export: served.source.name, aliases }, "exporting");
  }

  private async remove(key: string, served: Served): Promise<void> {
    this.server.exports.delete(served.source.name);
    this.served.delete(key);
    if (served.lockedVolume) await this.locks.release(served.backend.persistence, served.lockedVolume);
  }

  /** Drains in-flight requests, flushes, releases the locks. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.syncing;
    await this.server.close();
    for (const [key, served] of [...this.served]) await this.remove(key, served);
  }

  /** Names clients can use now. */
  exportNames(): string[] {
    return this.server.exports.names();
  }
}
