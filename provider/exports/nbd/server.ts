import { createServer, type Server, type Socket } from "node:net";
import type { BlockDevice } from "../../drivers/contract";
import { logger } from "../../util/log";
import { ExportTable, type ExportSource } from "./exports";
import { handshake } from "./handshake";
import { Limiter } from "./qos";
import { SocketReader } from "../../util/nbd/reader";
import { Transmission, transmissionFlags } from "./transmission";
import type { TlsSettings } from "./tls";

export interface ServerOptions {
  host?: string;
  port?: number;
  exports?: ExportTable;
  /** When set, clients must STARTTLS before anything else. */
  tls?: TlsSettings;
}

/**
 * kindling's NBD server: fixed-newstyle handshake, structured replies, base:allocation, and
 * any number of exports, each a BlockDevice opened per connection. Binds 127.0.0.1 unless told.
 */
export class NbdServer {
  readonly exports: ExportTable;
  private readonly server: Server;
  private readonly live = new Set<{ socket: Socket; transmission?: Transmission; device?: BlockDevice }>();
  private readonly limiters = new Map<ExportSource, Limiter>();

  constructor(private readonly opts: ServerOptions = {}) {
    this.exports = opts.exports ?? new ExportTable();
    this.server = createServer((socket) => void this.serve(socket));
  }

  listen(): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
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

  private async serve(socket: Socket): Promise<void> {
    socket.setNoDelay(true);
    const entry: { socket: Socket; transmission?: Transmission; device?: BlockDevice } = { socket };
    this.live.add(entry);
    const reader = new SocketReader(socket);
    try {
      const agreed = await handshake(socket, reader, this.exports, async (source, structured) => {
        const device = await source.open();
        try {
          return { size: device.size, flags: transmissionFlags(device, source.readOnly, structured) };
        } finally {
          await device.close();
        }
      }, this.opts.tls);
      if (!agreed) return;
      socket = agreed.socket;
      entry.socket = socket;
      const device = await agreed.source.open();
      entry.device = device;
      const readOnly = agreed.source.readOnly || device.readOnly;
      const flags = transmissionFlags(device, readOnly, agreed.structured);
      if (agreed.viaExportName) {
        const tail = Buffer.alloc(10 + (agreed.noZeroes ? 0 : 124));
        tail.writeBigUInt64BE(BigInt(device.size), 0);
        tail.writeUInt16BE(flags, 8);
        socket.write(tail);
      }
      const transmission = new Transmission(socket, agreed.reader, device, {
        readOnly,
        structured: agreed.structured,
        allocationContext: agreed.allocationContext,
        limiter: this.limiterFor(agreed.source),
      });
      entry.transmission = transmission;
      await transmission.run();
      if (!readOnly) await device.flush().catch(() => undefined);
    } catch (err) {
      logger().debug({ err: (err as Error).message }, "nbd connection ended with an error");
    } finally {
      await entry.device?.close().catch(() => undefined);
      this.live.delete(entry);
      socket.end();
      socket.destroy();
    }
  }

  /**
   * Stops: no new connections; each connection finishes the requests it has, flushes, and is
   * closed. What a client wrote and saw acknowledged is durable when this resolves.
   */
  async close(): Promise<void> {
    // server.close() calls back only once every connection is gone, so it is awaited last.
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const draining = [...this.live].map(async (entry) => {
      entry.transmission?.stop();
      await entry.transmission?.drain();
      if (entry.device && !entry.device.readOnly) await entry.device.flush().catch(() => undefined);
      entry.socket.destroy();
    });
    await Promise.all(draining);
    await closed;
  }
}
