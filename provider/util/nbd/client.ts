import { connect, type Socket } from "node:net";
import { SocketReader } from "./reader";
import {
  CmdFlag, Cmd, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT, Info, NBDMAGIC, Option,
  REQUEST_MAGIC, Reply, SIMPLE_REPLY_MAGIC, Tx,
} from "./protocol";

// The largest request sent: what every server takes (qemu-nbd's own limit is 32 MiB), whatever
// kindling's server would.
const REQUEST_MAX = 32 * 1024 * 1024;

/** An error the server answered a request with; `errno` is the NBD error number. */
export class NbdRequestError extends Error {
  constructor(readonly command: string, readonly errno: number) {
    super(`NBD ${command} failed with error ${errno}`);
  }
}

interface Pending {
  command: string;
  /** Where a READ's payload goes. */
  into?: Buffer;
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * A small NBD client: fixed newstyle, OPT_GO, simple replies, requests pipelined over one
 * connection and matched to their replies by handle. It is how kindling reaches data that
 * another NBD server holds (qemu-nbd on an RBD image), so it asks for nothing fancier than
 * every server has.
 */
export class NbdClient {
  private readonly pending = new Map<bigint, Pending>();
  /** Requests sent and not yet answered, so close() can wait for them. */
  private readonly inflight = new Set<Promise<void>>();
  private nextHandle = 1n;
  private failed?: Error;

  private constructor(
    private readonly socket: Socket,
    private readonly reader: SocketReader,
    readonly size: number,
    readonly flags: number,
  ) {
    void this.receive();
  }

  /** Connects to a Unix socket path, or to { host, port }. */
  static async connect(target: string | { host: string; port: number }, exportName = ""): Promise<NbdClient> {
    const socket = typeof target === "string" ? connect(target) : connect(target.port, target.host);
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
    const reader = new SocketReader(socket);
    try {
      const greeting = await reader.read(18);
      if (greeting.readBigUInt64BE(0) !== NBDMAGIC || greeting.readBigUInt64BE(8) !== IHAVEOPT) throw new Error("not a newstyle NBD server");
      const serverFlags = greeting.readUInt16BE(16);
      if (!(serverFlags & FLAG_FIXED_NEWSTYLE)) throw new Error("the NBD server does not speak fixed newstyle");
      const clientFlags = Buffer.alloc(4);
      clientFlags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (serverFlags & FLAG_NO_ZEROES));
      socket.write(clientFlags);
      const { size, flags } = await NbdClient.go(socket, reader, exportName);
      return new NbdClient(socket, reader, size, flags);
    } catch (err) {
      socket.destroy();
      throw err;
    }
  }

  /** OPT_GO: the export's size and transmission flags, or the server's refusal. */
  private static async go(socket: Socket, reader: SocketReader, exportName: string): Promise<{ size: number; flags: number }> {
    const name = Buffer.from(exportName, "utf8");
    const data = Buffer.alloc(4 + name.length + 2);
    data.writeUInt32BE(name.length, 0);
    name.copy(data, 4);
    const head = Buffer.alloc(16);
    head.writeBigUInt64BE(IHAVEOPT, 0);
    head.writeUInt32BE(Option.GO, 8);
    head.writeUInt32BE(data.length, 12);
    socket.write(Buffer.concat([head, data]));
    let size = -1;
    let flags = 0;
    for (;;) {
      const reply = await reader.read(20);
      const type = reply.readUInt32BE(12);
      const body = await reader.read(reply.readUInt32BE(16));
      if (type === Reply.ACK) break;
      if (type >= 2 ** 31) throw new Error(`the NBD server refused export ${JSON.stringify(exportName)} (reply ${type - 2 ** 31})${body.length ? `: ${body.toString("utf8")}` : ""}`);
      if (type === Reply.INFO && body.readUInt16BE(0) === Info.EXPORT) {
        size = Number(body.readBigUInt64BE(2));
        flags = body.readUInt16BE(10);
      }
    }
    if (size < 0) throw new Error("the NBD server sent no export size");
    return { size, flags };
  }

  get readOnly(): boolean {
    return (this.flags & Tx.READ_ONLY) !== 0;
  }

  can(flag: number): boolean {
    return (this.flags & flag) !== 0;
  }

  /** Reads replies forever; each completes the request with its handle. */
  private async receive(): Promise<void> {
    try {
      for (;;) {
        const head = await this.reader.read(16);
        if (head.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) throw new Error("unexpected NBD reply magic");
        const errno = head.readUInt32BE(4);
        const handle = head.readBigUInt64BE(8);
        const request = this.pending.get(handle);
        if (!request) throw new Error(`NBD reply for unknown handle ${handle}`);
        this.pending.delete(handle);
        if (errno) {
          request.reject(new NbdRequestError(request.command, errno));
          continue;
        }
        if (request.into) (await this.reader.read(request.into.length)).copy(request.into);
        request.resolve();
      }
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private fail(err: Error): void {
    this.failed ??= err;
    for (const request of this.pending.values()) request.reject(this.failed);
    this.pending.clear();
    this.socket.destroy();
  }

  private request(type: number, offset: number, length: number, opts: { flags?: number; payload?: Buffer; into?: Buffer } = {}): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    const handle = this.nextHandle++;
    const head = Buffer.alloc(28);
    head.writeUInt32BE(REQUEST_MAGIC, 0);
    head.writeUInt16BE(opts.flags ?? 0, 4);
    head.writeUInt16BE(type, 6);
    head.writeBigUInt64BE(handle, 8);
    head.writeBigUInt64BE(BigInt(offset), 16);
    head.writeUInt32BE(length, 24);
    const command = Object.entries(Cmd).find(([, v]) => v === type)?.[0] ?? String(type);
    const answered = new Promise<void>((resolve, reject) => {
      this.pending.set(handle, { command, into: opts.into, resolve, reject });
      // Both writes happen in this tick, so concurrent requests never interleave on the wire.
      this.socket.write(head);
      if (opts.payload) this.socket.write(opts.payload);
    });
    this.inflight.add(answered);
    const forget = () => void this.inflight.delete(answered);
    answered.then(forget, forget);
    return answered;
  }

  /** Splits [offset, offset+length) into pieces the server accepts, sent together. */
  private async pieces(offset: number, length: number, send: (at: number, n: number) => Promise<void>): Promise<void> {
    const work: Promise<void>[] = [];
    for (let at = 0; at < length; at += REQUEST_MAX) work.push(send(offset + at, Math.min(REQUEST_MAX, length - at)));
    await Promise.all(work);
  }

  pread(buffer: Buffer, offset: number): Promise<void> {
    return this.pieces(offset, buffer.length, (at, n) => this.request(Cmd.READ, at, n, { into: buffer.subarray(at - offset, at - offset + n) }));
  }

  pwrite(buffer: Buffer, offset: number, fua = false): Promise<void> {
    return this.pieces(offset, buffer.length, (at, n) =>
      this.request(Cmd.WRITE, at, n, { payload: buffer.subarray(at - offset, at - offset + n), flags: fua ? CmdFlag.FUA : 0 }));
  }

  flush(): Promise<void> {
    return this.request(Cmd.FLUSH, 0, 0);
  }

  trim(offset: number, length: number): Promise<void> {
    return this.pieces(offset, length, (at, n) => this.request(Cmd.TRIM, at, n));
  }

  /** WRITE_ZEROES; without `mayTrim` the server must keep the range allocated (NO_HOLE). */
  zero(offset: number, length: number, mayTrim: boolean): Promise<void> {
    return this.pieces(offset, length, (at, n) => this.request(Cmd.WRITE_ZEROES, at, n, { flags: mayTrim ? 0 : CmdFlag.NO_HOLE }));
  }

  /** NBD_CMD_DISC, then the socket closes; pending requests finish first. */
  async close(): Promise<void> {
    if (this.failed) return;
    await Promise.allSettled([...this.inflight]);
    const head = Buffer.alloc(28);
    head.writeUInt32BE(REQUEST_MAGIC, 0);
    head.writeUInt16BE(Cmd.DISC, 6);
    this.failed = new Error("the NBD connection is closed");
    await new Promise<void>((resolve) => this.socket.end(head, () => resolve()));
    this.socket.destroy();
  }
}
