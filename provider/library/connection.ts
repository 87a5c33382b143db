import type { ConnectionInfo, ConnectionRecord } from "../persistence/records";
import { InvalidInputError } from "../util/errors";
import { newId, now } from "../util/ids";
import { attachLocally, detachLocally, refreshLocalSize } from "../exports/local";
import { isServedProtocol, servedConnectionInfo } from "../exports/protocols";
import type { Backend } from "./backend";
import { Volume } from "./volume";
import type { Snapshot } from "./snapshot";

/**
 * A volume made reachable for one consumer (cinderlib's Connection). The record keeps the
 * connection info and, when attached on this host, the device path: unlike cinderlib, the
 * local attachment is persisted, so `kindling detach` in a later process finds it.
 */
export class Connection {
  constructor(
    readonly backend: Backend,
    private record: ConnectionRecord,
  ) {}

  get id(): string { return this.record.id; }
  get volumeId(): string { return this.record.volumeId; }
  get snapshotId(): string | undefined { return this.record.snapshotId; }
  get protocol(): string { return this.record.protocol; }
  get connector(): Record<string, unknown> { return structuredClone(this.record.connector); }
  /** With the driver's secrets back in place: the record holds "[secret]" where they go. */
  get connectionInfo(): ConnectionInfo { return revealSecrets(this.record.connectionInfo, this.backend.driver.connectionSecrets?.() ?? {}); }
  get attachMode(): "rw" | "ro" { return this.record.attachMode; }
  get devicePath(): string | undefined { return this.record.devicePath; }
  /** A device exists on this host for it. */
  get attached(): boolean { return this.record.devicePath !== undefined; }
  get createdAt(): string { return this.record.createdAt; }

  /** Asks the driver for connection info and records the connection (the volume is locked). */
  static async build(
    volume: Volume,
    protocol: string,
    connector: Record<string, unknown>,
    opts: { attachMode?: "rw" | "ro"; attachedHost?: string },
  ): Promise<Connection> {
    const backend = volume.backend;
    if (volume.status !== "available" && volume.status !== "in-use") {
      throw new InvalidInputError("volume", `volume ${volume.name} is ${volume.status}; only available or in-use volumes can be connected`);
    }
    const attachMode = opts.attachMode ?? "rw";
    const info = isServedProtocol(protocol)
      ? servedConnectionInfo(protocol, volume.id, attachMode, volume.qosSpecs)
      : await backend.driver.initializeConnection(volume.toDriver(), protocol, connector, { attachMode });
    const record: ConnectionRecord = {
      class: "Connection",
      id: newId(),
      backend: backend.name,
      volumeId: volume.id,
      protocol,
      connector,
      connectionInfo: maskSecrets(info, backend.driver.connectionSecrets?.() ?? {}),
      attachMode,
      attachedHost: opts.attachedHost ?? (typeof connector.host === "string" ? connector.host : undefined),
      createdAt: now(),
      updatedAt: now(),
    };
    try {
      await backend.persistence.setConnection(record);
      await volume.connectionsChanged();
    } catch (err) {
      if (!isServedProtocol(protocol)) await backend.driver.terminateConnection(volume.toDriver(), protocol, connector).catch(() => undefined);
      await backend.persistence.deleteConnection(record.id).catch(() => undefined);
      throw err;
    }
    return new Connection(backend, record);
  }

  /** Exports a snapshot, read-only, over a protocol kindling serves itself (nbd). */
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
      connectionInfo: servedConnectionInfo(protocol, snapshot.id, "ro", {}),
      attachMode: "ro",
      createdAt: now(),
      updatedAt: now(),
    };
    await backend.persistence.setConnection(record);
    return new Connection(backend, record);
  }

  private async change(fields: Partial<ConnectionRecord>): Promise<void> {
    this.record = { ...this.record, ...fields, updatedAt: now() };
    await this.backend.persistence.setConnection(this.record);
  }

  async save(): Promise<void> {
    await this.backend.persistence.setConnection(this.record);
  }

  /** Gives this host a block device for the connection. */
  async attach(): Promise<string> {
    if (this.record.devicePath) throw new InvalidInputError("connection", `already attached at ${this.record.devicePath}`);
    const device = await attachLocally(this.connectionInfo, { readOnly: this.attachMode === "ro" });
    try {
      await this.change({ devicePath: device });
    } catch (err) {
      await detachLocally(this.connectionInfo, device).catch(() => undefined);
      throw err;
    }
    return device;
  }

  /** Releases the local device; the connection stays until `disconnect()`. */
  async detach(): Promise<void> {
    // Re-read first: another handle or process may have detached or disconnected it meanwhile,
    // and writing this stale record back would revive a connection that is gone (after which
    // the volume could never be deleted).
    const [current] = await this.backend.persistence.getConnections({ id: this.id });
    if (!current) {
      this.record = { ...this.record, devicePath: undefined };
      return;
    }
    this.record = current;
    const device = this.record.devicePath;
    if (!device) return;
    await detachLocally(this.connectionInfo, device);
    await this.change({ devicePath: undefined });
  }

  /** After the volume grew: the attached device shows the new size. */
  async extend(): Promise<void> {
    if (this.record.devicePath) await refreshLocalSize(this.connectionInfo, this.record.devicePath);
  }

  /** Ends the connection, releasing a local device first so none is leaked. */
  async disconnect(): Promise<void> {
    await this.backend.locks.run(this.volumeId, async () => {
      await this.detach();
      const [record] = await this.backend.persistence.getVolumes({ id: this.volumeId });
      const volume = record && new Volume(this.backend, record);
      if (volume && !isServedProtocol(this.protocol)) await this.backend.driver.terminateConnection(volume.toDriver(), this.protocol, this.record.connector);
      await this.backend.persistence.deleteConnection(this.id);
      if (volume) await volume.connectionsChanged();
    });
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
