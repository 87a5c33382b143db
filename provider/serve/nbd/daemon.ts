import type { BackendSet } from "../../library/config";
import type { Backend } from "../../library/backend";
import type { Connection } from "../../library/connection";
import { DEFAULT_STALE_MS, ExportClaims, WriterLocks, type LockResult } from "../../library/export-claims";
import { errorMessage } from "../../util/errors";
import { logger } from "../../util/log";
import type { ExportSource } from "../../nbd/exports";
import { NbdServer } from "../../nbd/server";
import type { TlsSettings } from "../../nbd/tls";
import type { NbdTlsAdvert } from "../../attach/protocols";
import { NbdServerRecord } from "../../library/nbd-servers";

interface Served {
  /** backend name / connection id */
  key: string;
  source: ExportSource;
  aliases: string[];
  backend: Backend;
  claim: { connectionId: string; volumeId: string; snapshotId?: string; mode: "rw" | "ro" };
  /** The volume whose writer lock this export holds, for read-write exports. */
  lockedVolume?: string;
  /** When the writer lock was last renewed. */
  renewedAt: number;
}

/**
 * `kindling nbd serve`: serves every volume and snapshot that has an `nbd` connection in the
 * configured backends' records. It looks again every `pollMs`, so exports added or removed
 * (by `kindling connect`, a Pulumi Attachment) take effect without a restart, and a restarted
 * server finds them all again. Read-write exports take the volume's writer lock.
 *
 * While it serves a connection's export it holds a claim on it in the records. An export whose
 * connection is removed, or whose writer lock was lost, has its clients closed (in-flight
 * requests answered, writes flushed) before its lock and claim are given back: whoever waits for
 * the claim to go (`disconnect`, `delete`) knows no client of it is left.
 */
export class ExportDaemon {
  readonly server: NbdServer;
  readonly locks: WriterLocks;
  readonly claims: ExportClaims;
  private readonly served = new Map<string, Served>();
  /** Exports this server could not lock, and the holder it last said so about. */
  private readonly refused = new Map<string, string>();
  /** Exports that could not be served, and the last reason logged. */
  private readonly failed = new Map<string, string>();
  /** Backends whose records could not be read, and the last reason logged. */
  private readonly unreadable = new Map<string, string>();
  private timer?: NodeJS.Timeout;
  private syncing = Promise.resolve();
  private readonly pollMs: number;
  private readonly staleMs: number;
  /** Where this server says it serves, in every backend's records, once it listens. */
  private record?: NbdServerRecord;

  constructor(
    private readonly backends: BackendSet,
    private readonly opts: {
      host?: string;
      port?: number;
      pollMs?: number;
      staleMs?: number;
      tls?: TlsSettings;
      /** The address consumers are told to use, when not the one it listens on. */
      advertise?: { host: string; port: number };
      /** The public half of the TLS setup, for the consumers' connection info. */
      tlsAdvert?: NbdTlsAdvert;
    } = {},
  ) {
    this.server = new NbdServer({ host: opts.host, port: opts.port, tls: opts.tls });
    this.staleMs = opts.staleMs ?? DEFAULT_STALE_MS;
    this.locks = new WriterLocks(this.staleMs);
    this.claims = new ExportClaims(this.staleMs);
    this.pollMs = opts.pollMs ?? 1000;
  }

  async start(): Promise<{ host: string; port: number }> {
    await this.sync();
    const address = await this.server.listen();
    this.record = new NbdServerRecord({
      staleMs: this.staleMs,
      listen: address,
      address: this.opts.advertise ?? address,
      ...(this.opts.tlsAdvert ? { tls: this.opts.tlsAdvert } : {}),
    });
    await this.recordAddress();
    this.timer = setInterval(() => void this.sync(), this.pollMs);
    return address;
  }

  /** Writes (or renews) where this server serves into each backend's records. */
  private async recordAddress(): Promise<void> {
    const record = this.record;
    if (!record) return;
    for (const name of this.backends.names()) {
      await record.renew(this.backends.get(name).persistence).catch((err) => logger().warn({ backend: name, err: errorMessage(err) }, "cannot record where this server listens; connection info made meanwhile names the default address"));
    }
  }

  /** Brings the export table in line with the records (one sync at a time). */
  sync(): Promise<void> {
    this.syncing = this.syncing.then(() => this.syncOnce()).catch((err) => logger().error({ err: errorMessage(err) }, "nbd export sync failed"));
    return this.syncing;
  }

  private async syncOnce(): Promise<void> {
    const wanted = new Map<string, { backend: Backend; connection: Connection }>();
    // A backend whose records cannot be read now keeps its exports as they are (they are not
    // known to be gone); their locks still expire below if they cannot be renewed.
    const unreadable = new Set<Backend>();
    for (const name of this.backends.names()) {
      const backend = this.backends.get(name);
      try {
        for (const connection of await backend.connections()) {
          if (connection.protocol === "nbd") wanted.set(`${name}/${connection.id}`, { backend, connection });
        }
        this.unreadable.delete(name);
      } catch (err) {
        unreadable.add(backend);
        const message = errorMessage(err);
        if (this.unreadable.get(name) !== message) logger().error({ backend: name, err: message }, "cannot read the backend's connections; its exports stay as they are");
        this.unreadable.set(name, message);
      }
    }
    for (const [key, served] of this.served) {
      if (!wanted.has(key) && !unreadable.has(served.backend)) await this.remove(key, served, "its connection was removed");
    }
    for (const key of [...this.refused.keys(), ...this.failed.keys()]) {
      if (!wanted.has(key)) this.forget(key);
    }
    for (const [key, served] of [...this.served]) await this.renew(key, served);
    for (const [key, { backend, connection }] of wanted) {
      if (this.served.has(key)) continue;
      await this.add(key, backend, connection).catch((err) => this.logFailure(key, errorMessage(err)));
    }
    await this.recordAddress();
  }

  /** Heartbeat: renews the writer lock and the claim; an export whose lock is gone is closed. */
  private async renew(key: string, served: Served): Promise<void> {
    const persistence = served.backend.persistence;
    if (served.lockedVolume) {
      let lock: LockResult;
      try {
        lock = await this.locks.acquire(persistence, served.lockedVolume);
      } catch (err) {
        // Unrenewed this long, the lock may be taken over by another server: stop writing.
        if (Date.now() - served.renewedAt > this.staleMs) {
          logger().warn({ export: key, volume: served.lockedVolume, err: errorMessage(err) }, "cannot renew the writer lock; closing the export's connections");
          await this.remove(key, served, "its writer lock could not be renewed");
        } else {
          logger().warn({ export: key, volume: served.lockedVolume, err: errorMessage(err) }, "cannot renew the writer lock; will try again");
        }
        return;
      }
      if (!lock.ok) {
        logger().warn({ export: key, volume: served.lockedVolume, holder: lock.holder }, lock.writer?.kind === "hand" ? "the writer lock was taken by hand (`kindling volume lock`); closing the export's connections" : "the writer lock was taken by another server; closing the export's connections");
        // Said once: the refusals that follow name the same holder.
        this.refused.set(key, holderKey(lock));
        await this.remove(key, served, "its writer lock was lost");
        return;
      }
      served.renewedAt = Date.now();
    }
    await this.claims.hold(persistence, served.claim).catch((err) => logger().warn({ export: key, err: errorMessage(err) }, "cannot renew the export's claim"));
  }

  private async add(key: string, backend: Backend, connection: Connection): Promise<void> {
    let source: ExportSource;
    let aliases: string[];
    let claim: Served["claim"];
    if (connection.snapshotId) {
      const snapshot = await backend.getSnapshot(connection.snapshotId);
      source = { name: snapshot.id, description: `snapshot ${snapshot.name}`, readOnly: true, open: () => snapshot.open() };
      aliases = [snapshot.name];
      claim = { connectionId: connection.id, volumeId: snapshot.volumeId, snapshotId: snapshot.id, mode: "ro" };
    } else {
      const volume = await backend.getVolume(connection.volumeId);
      const readOnly = connection.attachMode === "ro";
      // Each client gets the volume as the records hold it when it connects: the size of an
      // extend made since the export was added, and a refusal once the volume is being deleted.
      source = { name: volume.id, description: `volume ${volume.name}`, readOnly, open: async () => (await volume.refresh()).open({ readOnly }), qos: volume.qosSpecs };
      aliases = [volume.name];
      claim = { connectionId: connection.id, volumeId: volume.id, mode: readOnly ? "ro" : "rw" };
    }
    const lockedVolume = claim.mode === "rw" ? claim.volumeId : undefined;
    if (lockedVolume) {
      const lock = await this.locks.acquire(backend.persistence, lockedVolume);
      if (!lock.ok) {
        this.logRefusal(key, aliases[0], lock);
        return;
      }
    }
    try {
      await this.claims.hold(backend.persistence, claim);
      // A disconnect removes the record, then waits for the claim; this takes the claim, then
      // looks at the record. Whichever runs second sees the other, so a connection removed
      // meanwhile is never exported unclaimed.
      const [still] = await backend.persistence.getConnections({ id: connection.id });
      if (!still) {
        await this.giveBack(backend, claim.connectionId, lockedVolume);
        return;
      }
    } catch (err) {
      await this.giveBack(backend, claim.connectionId, lockedVolume);
      throw err;
    }
    if (this.refused.delete(key)) logger().info({ export: key, volume: aliases[0] }, "took the writer lock; exporting read-write");
    this.failed.delete(key);
    this.publish({ key, source, aliases, backend, claim, lockedVolume, renewedAt: Date.now() });
  }

  private publish(served: Served): void {
    // A name already taken by another export (two backends, same volume name) stays with the first.
    const aliases = served.aliases.filter((a) => !this.server.exports.get(a));
    this.server.exports.set(served.source, aliases);
    this.served.set(served.key, served);
    logger().info({ export: served.source.name, aliases }, "exporting");
  }

  /**
   * Stops serving an export: no new clients, then its clients are closed (in-flight requests
   * answered, writes flushed), and only then are its writer lock and its claim given back.
   */
  private async remove(key: string, served: Served, reason: string): Promise<void> {
    this.server.exports.delete(served.source.name);
    this.served.delete(key);
    let closed = 0;
    try {
      closed = await this.server.closeSource(served.source);
    } finally {
      await this.giveBack(served.backend, served.claim.connectionId, served.lockedVolume);
    }
    logger().info({ export: served.source.name, reason, clients: closed }, "stopped exporting");
  }

  /** The lock first, the claim last: once the claim is gone, everything of the export is. */
  private async giveBack(backend: Backend, connectionId: string, lockedVolume: string | undefined): Promise<void> {
    const persistence = backend.persistence;
    if (lockedVolume) {
      await this.locks.release(persistence, lockedVolume).catch((err) => logger().warn({ volume: lockedVolume, err: errorMessage(err) }, "cannot release the writer lock; it expires"));
    }
    await this.claims.release(persistence, connectionId).catch((err) => logger().warn({ connection: connectionId, err: errorMessage(err) }, "cannot release the export's claim; it expires"));
  }

  /** Said when the holder is new to us, not at every poll. */
  private logRefusal(key: string, volume: string, lock: Extract<LockResult, { ok: false }>): void {
    const holder = holderKey(lock);
    if (this.refused.get(key) === holder) return;
    this.refused.set(key, holder);
    const writer = lock.writer;
    const message = writer?.kind === "hand"
      ? `volume is locked by ${writer.description} with \`kindling volume lock\`; not exporting it read-write until \`kindling volume unlock\` releases it`
      : writer?.purpose === "download"
        ? `volume is being downloaded by ${writer.description}; not exporting it read-write until the download ends`
        : "volume is exported read-write by another server; not exporting it here until its lock is free";
    logger().warn({ export: key, volume, holder: lock.holder }, message);
  }

  private logFailure(key: string, message: string): void {
    if (this.failed.get(key) === message) return;
    this.failed.set(key, message);
    logger().error({ export: key, err: message }, "cannot export");
  }

  private forget(key: string): void {
    this.refused.delete(key);
    this.failed.delete(key);
  }

  /** Drains in-flight requests, flushes, releases the locks and claims. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.syncing;
    await this.server.close();
    for (const [key, served] of [...this.served]) await this.remove(key, served, "the server stopped");
    const record = this.record;
    this.record = undefined;
    for (const name of record ? this.backends.names() : []) {
      await record?.remove(this.backends.get(name).persistence).catch((err) => logger().warn({ backend: name, err: errorMessage(err) }, "cannot remove this server's address from the records; it expires"));
    }
  }

  /** Names clients can use now. */
  exportNames(): string[] {
    return this.server.exports.names();
  }
}

/** Tells holders apart: another process with the same pid is another holder. */
function holderKey(lock: Extract<LockResult, { ok: false }>): string {
  return lock.owner ? JSON.stringify(lock.owner) : lock.holder;
}
