import { createServer, type Server, type Socket } from "node:net";
import type { BlockDevice } from "../drivers/contract";
import { logger } from "../util/log";
import { ExportTable, type ExportSource } from "./exports";
import { handshake, type HandshakeResult } from "./handshake";
import { Limiter } from "./qos";
import { SocketReader } from "../util/nbd/reader";
import { Transmission } from "./transmission";
import { nativeTransmission } from "./native/module";
import { NativeTransmission } from "./native/transmission";
import { openNativeDevice, releaseNativeDevice } from "./native/devices";
import type { TlsSettings } from "./tls";

export interface ServerOptions {
  host?: string;
  port?: number;
  /** Listen on this unix socket instead of TCP (in a directory only its owner can enter). */
  socketPath?: string;
  exports?: ExportTable;
  /** When set, clients must STARTTLS before anything else. */
  tls?: TlsSettings;
}

/** One client connection and what it holds. */
interface Client {
  socket: Socket;
  /** The export it asked for (INFO, GO or EXPORT_NAME), and the device opened for it. */
  source?: ExportSource;
  device?: BlockDevice;
  transmission?: Transmission | NativeTransmission;
  /** Resolves once the connection is over: socket destroyed, device closed. */
  finished: Promise<void>;
}

/**
 * kindling's NBD server: fixed-newstyle handshake, structured replies, base:allocation, and
 * any number of exports, each a BlockDevice opened per connection. Binds 127.0.0.1 unless told.
 */
export class NbdServer {
  readonly exports: ExportTable;
  private readonly server: Server;
  private readonly live = new Set<Client>();
  private readonly limiters = new Map<ExportSource, Limiter>();
  /** Sources whose clients were closed: a client still negotiating must not start on them. */
  private readonly retired = new WeakSet<ExportSource>();
  /** Connections that reached transmission, by the path that served them. */
  readonly served = { native: 0, javascript: 0 };

  constructor(private readonly opts: ServerOptions = {}) {
    this.exports = opts.exports ?? new ExportTable();
    this.server = createServer((socket) => void this.serve(socket));
  }

  listen(): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      const path = this.opts.socketPath;
      if (path !== undefined) {
        this.server.listen(path, () => resolve({ host: path, port: 0 }));
        return;
      }
      this.server.listen(this.opts.port ?? 10809, this.opts.host ?? "127.0.0.1", () => {
        const address = this.server.address() as { address: string; port: number };
        resolve({ host: address.address, port: address.port });
      });
    });
  }

  /** Connections being served now. */
  get connections(): number {
    return this.live.size;
  }

  /** Limits are per export, shared by its connections. */
  private limiterFor(source: ExportSource): Limiter | undefined {
    if (!source.qos) return undefined;
    let limiter = this.limiters.get(source);
    if (!limiter) {
      limiter = new Limiter(source.qos);
      this.limiters.set(source, limiter);
    }
    return limiter.active ? limiter : undefined;
  }

  /**
   * The device for a client's chosen export: the one it already has when it asks about the same
   * export again (INFO, then GO), else a new one, the previous one closed.
   */
  private async deviceFor(client: Client, source: ExportSource): Promise<BlockDevice> {
    if (this.retired.has(source)) throw new Error("the export was removed");
    if (client.source === source && client.device) return client.device;
    const previous = client.device;
    client.device = undefined;
    client.source = source;
    await previous?.close().catch(() => undefined);
    const device = await source.open();
    // The export may have been removed, or the client gone, while the device opened.
    if (this.retired.has(source) || client.source !== source || client.socket.destroyed) {
      await device.close().catch(() => undefined);
      throw new Error("the export was removed");
    }
    client.device = device;
    return device;
  }

  /**
   * The native data path where it serves the connection as well (a device with a native target:
   * a file, an RBD image librbd opens; no TLS, no QoS limits, the module built), else the
   * JavaScript one. Both answer every request the same way.
   */
  private async transmissionFor(agreed: HandshakeResult): Promise<Transmission | NativeTransmission> {
    const limiter = this.limiterFor(agreed.source);
    const native = nativeTransmission();
    const target = agreed.device.native;
    const opts = { readOnly: agreed.readOnly, structured: agreed.structured, allocationContext: agreed.allocationContext };
    if (native && target !== undefined && !limiter && !this.opts.tls && NativeTransmission.canTakeOver(agreed.socket)) {
      const device = await openNativeDevice(native, target, agreed.readOnly);
      // The client may have gone while the image opened.
      if (device && NativeTransmission.canTakeOver(agreed.socket)) {
        this.served.native++;
        logger().debug({ export: agreed.source.name, path: "native", device: target.kind }, "nbd transmission");
        return new NativeTransmission(native, agreed.socket, agreed.reader, agreed.device, device, opts);
      }
      if (device) releaseNativeDevice(native, device);
    }
    this.served.javascript++;
    logger().debug({ export: agreed.source.name, path: "javascript" }, "nbd transmission");
    return new Transmission(agreed.socket, agreed.reader, agreed.device, { ...opts, limiter });
  }

  private async serve(socket: Socket): Promise<void> {
    socket.setNoDelay(true);
    let finish!: () => void;
    const client: Client = { socket, finished: new Promise<void>((resolve) => (finish = resolve)) };
    this.live.add(client);
    const reader = new SocketReader(socket);
    try {
      const agreed = await handshake(socket, reader, this.exports, (source) => this.deviceFor(client, source), this.opts.tls);
      if (!agreed) return;
      client.socket = agreed.socket;
      if (this.retired.has(agreed.source) || client.device !== agreed.device || agreed.socket.destroyed) return;
      const transmission = await this.transmissionFor(agreed);
      if (agreed.socket.destroyed) return; // closed while an image opened for it
      client.transmission = transmission;
      await transmission.run();
      // Every reply is sent: the client learns at once that the connection is over (clients
      // such as nbdcopy wait for that before they exit), then the server flushes for itself.
      client.socket.end();
      if (!agreed.readOnly) await agreed.device.flush().catch(() => undefined);
    } catch (err) {
      logger().debug({ err: (err as Error).message }, "nbd connection ended with an error");
    } finally {
      await client.device?.close().catch(() => undefined);
      client.device = undefined;
      this.live.delete(client);
      client.socket.end();
      client.socket.destroy();
      finish();
    }
  }

  /**
   * Ends one connection cleanly: no new requests are read, those in flight are answered, writes
   * are flushed, the replies are sent, and the socket is closed. Resolves once it is all over.
   */
  private async shut(client: Client): Promise<void> {
    if (client.transmission) {
      client.transmission.stop();
      await client.transmission.drain();
      if (client.device && !client.device.readOnly) await client.device.flush().catch(() => undefined);
      await endGracefully(client.socket);
    }
    client.socket.destroy();
    await client.finished;
  }

  /**
   * Closes every connection serving `source` (see `shut`), and keeps clients still negotiating
   * from starting on it. The caller removes the export from the table first, so no new client
   * can choose it. What those clients wrote and saw acknowledged is durable when this resolves.
   */
  async closeSource(source: ExportSource): Promise<number> {
    this.retired.add(source);
    const clients = [...this.live].filter((client) => client.source === source);
    await Promise.all(clients.map((client) => this.shut(client)));
    this.limiters.delete(source);
    return clients.length;
  }

  /**
   * Stops: no new connections; each connection finishes the requests it has, flushes, and is
   * closed. What a client wrote and saw acknowledged is durable when this resolves.
   */
  async close(): Promise<void> {
    // server.close() calls back only once every connection is gone, so it is awaited last.
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    await Promise.all([...this.live].map((client) => this.shut(client)));
    await closed;
  }
}

/**
 * Half-closes a socket once what was written to it has gone out, so the last replies reach the
 * client before the close. A client that stops reading cannot hold the server: after a short
 * wait the socket is closed anyway.
 */
function endGracefully(socket: Socket, waitMs = 2000): Promise<void> {
  if (socket.destroyed) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(done, waitMs);
    socket.once("finish", done);
    socket.once("close", done);
    socket.end();
  });
}
