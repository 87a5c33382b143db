import { hostname } from "node:os";
import type { ConnectionInfo, ConnectionRecord, Lease } from "../persistence/records";
import { InvalidInputError, KindlingError, NotFoundError } from "../util/errors";
import { newId, now } from "../util/ids";
import { logger } from "../util/log";
import { attachLocally, detachLocally, refreshLocalSize, stillAttached } from "../attach";
import { releaseLeftovers } from "../attach/leftovers";
import { isServedProtocol, nbdEndpointData, servedConnectionInfo } from "../attach/protocols";
import { connectionInfoOf } from "../drivers/contract";
import { nbdEndpointFor } from "./nbd-servers";
import { waitForClaimRelease } from "./export-claims";
import { Tracked } from "./tracked";
import type { Backend } from "./backend";
import type { Volume } from "./volume";
import type { Snapshot } from "./snapshot";

/** How long a disconnect waits for `kindling nbd serve` to close the export's clients. */
const SERVED_CLOSE_WAIT_MS = 15_000;

/**
 * A volume made reachable for one consumer (cinderlib's Connection). The record keeps the
 * connection info and, when attached on this host, the device path: unlike cinderlib, the
 * local attachment is persisted, so `kindling detach` in a later process finds it. A device is
 * made only while the record exists and holds an "attach" lease, so a crash between the two
 * leaves a record that says which device to look for, never a device nobody knows of.
 */
export class Connection extends Tracked<"connection"> {
  protected readonly kind = "connection";
  private removed = false;

  constructor(backend: Backend, record: ConnectionRecord) {
    // Records written before connection info had Cinder's shape read as if written now.
    super(backend, { ...record, connectionInfo: connectionInfoOf(record.connectionInfo) });
  }

  get volumeId(): string { return this.record.volumeId; }
  get snapshotId(): string | undefined { return this.record.snapshotId; }
  get protocol(): string { return this.record.protocol; }
  get connector(): Record<string, unknown> { return structuredClone(this.record.connector); }
  /** With the driver's secrets back in place: the record holds "[secret]" where they go. */
  get connectionInfo(): ConnectionInfo { return revealSecrets(this.record.connectionInfo, this.secrets(this.record.connectionInfo)); }
  get attachMode(): "rw" | "ro" { return this.record.attachMode; }
  get devicePath(): string | undefined { return this.record.devicePath; }
  get attachedHost(): string | undefined { return this.record.attachedHost; }
  /** A device exists for it (on the host that attached it). */
  get attached(): boolean { return this.record.devicePath !== undefined; }
  /** A device exists for it on this host. */
  get attachedHere(): boolean { return this.attached && (this.record.attachedHost ?? hostname()) === hostname(); }
  get createdAt(): string { return this.record.createdAt; }
  get gone(): boolean { return this.removed; }

  private secrets(info: ConnectionInfo): Record<string, string> {
    return isServedProtocol(info.driver_volume_type) ? {} : (this.backend.driver.connectionSecrets?.(info) ?? {});
  }

  /**
   * The connection info as a consumer should use it now: for an NBD export, the address (and
   * TLS) of the server that serves it at this moment, which may have started, moved or changed
   * since the connection was made; for the others, what `connectionInfo` gives. With
   * `{ secrets: false }`, secrets stay "[secret]", as in the record.
   */
  async currentInfo(opts: { secrets?: boolean } = {}): Promise<ConnectionInfo> {
    const info = opts.secrets === false ? structuredClone(this.record.connectionInfo) : this.connectionInfo;
    if (!isServedProtocol(info.driver_volume_type) || typeof info.data.export_name !== "string") return info;
    const endpoint = await nbdEndpointFor(this.backend.persistence);
    // No server running: the address given when the connection was made stays.
    if (endpoint.source !== "server") return info;
    const { tls_mode: _m, tls_uri: _u, tls_ca_certificate: _c, tls_psk_identity: _i, ...rest } = info.data;
    return { ...info, data: { ...rest, ...nbdEndpointData(endpoint, info.data.export_name) } };
  }

  protected describe(): string {
    return `connection ${this.id} of volume ${this.volumeId}`;
  }
  protected notFound(): KindlingError {
    return new NotFoundError("connection", this.id, { hint: "it was disconnected" });
  }
  protected interrupted(): boolean {
    return false;
  }
  protected markGone(): void {
    this.removed = true;
  }

  /**
   * Asks the driver for connection info and records the connection (the caller holds the
   * volume's lease). With `attaching`, the record is written holding an "attach" lease and the
   * device is made under it.
   */
  static async build(
    volume: Volume,
    protocol: string,
    connector: Record<string, unknown>,
    opts: { attachMode?: "rw" | "ro"; attachedHost?: string; attaching?: boolean; id?: string },
  ): Promise<Connection> {
    const backend = volume.backend;
    const attachMode = opts.attachMode ?? "rw";
    const id = opts.id ?? newId();
    const info = isServedProtocol(protocol)
      ? servedConnectionInfo(protocol, volume.id, attachMode, volume.qosSpecs, await nbdEndpointFor(backend.persistence))
      : connectionInfoOf(await backend.driver.initializeConnection(volume.toDriver(), protocol, connector, { attachMode, connectionId: id }));
    const record: ConnectionRecord = {
      class: "Connection",
      id,
      backend: backend.name,
      volumeId: volume.id,
      protocol,
      connector,
      connectionInfo: maskSecrets(info, isServedProtocol(protocol) ? {} : (backend.driver.connectionSecrets?.(info) ?? {})),
      attachMode,
      attachedHost: opts.attachedHost ?? (typeof connector.host === "string" ? connector.host : undefined),
      createdAt: now(),
      updatedAt: now(),
    };
    const connection = new Connection(backend, record);
    try {
      if (opts.attaching) {
        await connection.created("attach", async () => {
          try {
            await connection.deviceUnderLease();
          } catch (err) {
            await connection.forget();
            throw err;
          }
        });
      } else {
        await connection.insert();
      }
    } catch (err) {
      if (!isServedProtocol(protocol)) await backend.driver.terminateConnection(volume.toDriver(), protocol, connector, info).catch(() => undefined);
      throw err;
    }
    return connection;
  }

  /** Exports a snapshot, read-only, over a protocol kindling serves itself (nbd). The caller holds the snapshot's lease. */
  static async buildForSnapshot(snapshot: Snapshot, protocol: string, connector: Record<string, unknown>): Promise<Connection> {
    const backend = snapshot.backend;
    if (!isServedProtocol(protocol)) throw new InvalidInputError("protocol", `snapshots are exported over nbd only, not ${JSON.stringify(protocol)}`);
    if (snapshot.status !== "available") throw new InvalidInputError("snapshot", `snapshot ${snapshot.name} is ${snapshot.status}, not available`);
    const record: ConnectionRecord = {
      class: "Connection",
      id: newId(),
      backend: backend.name,
      volumeId: snapshot.volumeId,
      snapshotId: snapshot.id,
      protocol,
      connector,
      connectionInfo: servedConnectionInfo(protocol, snapshot.id, "ro", {}, await nbdEndpointFor(backend.persistence)),
      attachMode: "ro",
      createdAt: now(),
      updatedAt: now(),
    };
    const connection = new Connection(backend, record);
    await connection.insert();
    return connection;
  }

  async save(): Promise<void> {
    await this.backend.persistence.setConnection(this.record);
  }

  /**
   * Gives this host a block device for the connection. Library callers go through
   * `Volume.attach()` or this method; either way the volume's lease is held for the check that
   * no other connection of the volume is attached here.
   */
  async attach(): Promise<string> {
    if (this.record.devicePath) throw new InvalidInputError("connection", `already attached at ${this.record.devicePath}`);
    const volume = await this.backend.getVolume(this.volumeId);
    return volume.attachConnection(this);
  }

  /** Makes the device, holding this connection's "attach" lease (Volume holds the volume's). */
  async makeDevice(): Promise<string> {
    return this.leased("attach", () => this.deviceUnderLease());
  }

  private async deviceUnderLease(): Promise<string> {
    if (this.record.devicePath) throw new InvalidInputError("connection", `already attached at ${this.record.devicePath}`);
    const device = await attachLocally(await this.currentInfo(), { readOnly: this.attachMode === "ro", name: this.id });
    try {
      await this.change({ devicePath: device, attachedHost: hostname() }, { release: true });
    } catch (err) {
      await detachLocally(this.connectionInfo, device).catch(() => undefined);
      throw err;
    }
    return device;
  }

  /** Releases the local device; the connection stays until `disconnect()`. */
  async detach(): Promise<void> {
    await this.leased("detach", async () => {
      const device = this.record.devicePath;
      if (!device) return;
      await detachLocally(this.connectionInfo, device);
      await this.change({ devicePath: undefined });
    }, { ifGone: () => undefined, freeing: true });
  }

  /** After the volume grew: the attached device shows the new size. */
  async extend(): Promise<void> {
    if (this.record.devicePath) await refreshLocalSize(this.connectionInfo, this.record.devicePath);
  }

  /** Ends the connection, releasing a local device first so none is leaked. */
  async disconnect(): Promise<void> {
    const volume = await this.backend.getVolume(this.volumeId).catch((err) => (err instanceof NotFoundError ? undefined : Promise.reject(err)));
    if (volume) await volume.disconnect(this);
    else await this.end();
  }

  /**
   * Detaches, tells the driver, removes the record (Volume.disconnect calls it holding the
   * volume's lease). For an NBD export it then waits until the server has closed the export's
   * clients, so nothing writes to the volume once this returns.
   */
  async end(): Promise<void> {
    await this.leased("disconnect", () => this.finishEnding(), { ifGone: () => undefined, freeing: true });
  }

  private async finishEnding(): Promise<void> {
    const device = this.record.devicePath;
    if (device && this.attachedHere) await detachLocally(this.connectionInfo, device);
    if (!isServedProtocol(this.protocol)) {
      const [v] = await this.backend.persistence.getVolumes({ id: this.volumeId });
      if (v) await this.backend.driver.terminateConnection({ id: v.id, pool: v.pool, sizeGiB: v.sizeGiB, extraSpecs: v.extraSpecs, qosSpecs: v.qosSpecs, location: v.location, sourceVolumeId: v.sourceVolumeId }, this.protocol, this.record.connector, this.connectionInfo);
    }
    await this.forget();
    if (isServedProtocol(this.protocol) && !(await waitForClaimRelease(this.backend.persistence, this.id, SERVED_CLOSE_WAIT_MS))) {
      logger().warn({ connection: this.id }, "the NBD server has not closed this export's clients yet; the volume cannot be deleted until it does");
    }
  }

  protected async repair(previous: ConnectionRecord, lease: Lease | undefined): Promise<"kept" | "gone"> {
    if (lease?.operation === "attach" || lease?.operation === "disconnect") {
      const here = !lease.owner || lease.owner.host === hostname();
      if (here) {
        // Devices the other connections of the volume record are theirs; anything else made
        // for this one (a loop device, a FUSE mount named by its id) goes.
        const others = (await this.backend.persistence.getConnections({ volumeId: previous.volumeId }))
          .filter((c) => c.id !== previous.id && c.devicePath).map((c) => c.devicePath as string);
        await releaseLeftovers(this.connectionInfo, this.id, others);
      } else {
        logger().warn({ connection: this.id, host: lease.owner.host }, "removing a connection whose attach on another host was interrupted; devices there are not released from here");
      }
      this.record = { ...this.record, devicePath: undefined };
      await this.finishEnding();
      return "gone";
    }
    // A detach cut short: the record keeps the device only if it still serves this connection.
    if (lease?.operation === "detach" && previous.devicePath && this.attachedHere && !(await stillAttached(this.connectionInfo, previous.devicePath))) {
      await this.change({ devicePath: undefined });
    }
    return "kept";
  }

  /** The record as plain JSON (what persistence stores and Pulumi state carries). */
  dump(): ConnectionRecord {
    return JSON.parse(JSON.stringify(this.record)) as ConnectionRecord;
  }

  static load(backend: Backend, record: ConnectionRecord): Connection {
    if (record?.class !== "Connection") throw new InvalidInputError("class", "not a Connection record");
    return new Connection(backend, structuredClone(record));
  }

  toJSON(): ConnectionRecord {
    return this.dump();
  }
}

/** Connection info as records keep it: the driver's secret fields replaced by "[secret]". */
function maskSecrets(info: ConnectionInfo, secrets: Record<string, string>): ConnectionInfo {
  const out = structuredClone(info);
  for (const field of Object.keys(secrets)) if (field in out.data) out.data[field] = SECRET;
  return out;
}

function revealSecrets(info: ConnectionInfo, secrets: Record<string, string>): ConnectionInfo {
  const out = structuredClone(info);
  for (const [field, value] of Object.entries(secrets)) if (out.data[field] === SECRET) out.data[field] = value;
  return out;
}

const SECRET = "[secret]";
