import type { Socket } from "node:net";
import type { BlockDevice } from "../drivers/contract";
import type { SocketReader } from "../util/nbd/reader";
import {
  ALLOWED_FLAGS, BASE_ALLOCATION_ID, CHUNK_DONE, Chunk, Cmd, CmdFlag, Errno, MAX_PAYLOAD, REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC, STATE_HOLE, STATE_ZERO, STRUCTURED_REPLY_MAGIC, Tx,
} from "../util/nbd/protocol";
import type { Limiter } from "./qos";
import { isAllZero } from "../util/zero";
import { RequestBuffers } from "./request-buffers";

const MAX_IN_FLIGHT = 64;
const U32_MAX_ALIGNED = 0xffffffff - 0xfff;

interface Request {
  flags: number;
  type: number;
  cookie: Buffer;
  offset: bigint;
  length: number;
}

/** An error a command answers with (an NBD errno), as opposed to a broken connection. */
class CommandError extends Error {
  constructor(readonly errno: number, message: string) {
    super(message);
  }
}

/** Maps a backend failure to the errno a client understands. */
function errnoOf(err: unknown): number {
  if (err instanceof CommandError) return err.errno;
  const code = (err as NodeJS.ErrnoException)?.code ?? (err as { code?: string })?.code;
  if (code === "ENOSPC" || code === "NO_SPACE" || code === "EDQUOT") return Errno.ENOSPC;
  if (code === "EPERM" || code === "EACCES" || code === "EROFS") return Errno.EPERM;
  if (code === "EINVAL" || code === "INVALID_INPUT") return Errno.EINVAL;
  if (code === "ENOMEM") return Errno.ENOMEM;
  return Errno.EIO;
}

export function transmissionFlags(device: BlockDevice, readOnly: boolean, structured: boolean): number {
  const caps = device.capabilities;
  let flags = Tx.HAS_FLAGS | Tx.SEND_CACHE;
  if (readOnly) flags |= Tx.READ_ONLY;
  else {
    if (caps.canFlush) flags |= Tx.SEND_FLUSH | Tx.SEND_FUA;
    if (caps.canTrim) flags |= Tx.SEND_TRIM;
    if (caps.canZero) flags |= Tx.SEND_WRITE_ZEROES | Tx.SEND_FAST_ZERO;
  }
  if (structured) flags |= Tx.SEND_DF;
  // MULTI_CONN promises that a flush on one connection covers writes made on all of them.
  if (caps.canMultiConn) flags |= Tx.CAN_MULTI_CONN;
  return flags;
}

/**
 * The transmission phase of one connection: requests are read in order, run concurrently, and
 * answered as they finish (out of order), each reply written whole in one call so replies never
 * interleave. Resolves when the client disconnects; in-flight requests finish first.
 */
export class Transmission {
  private inFlight = 0;
  private readonly idle: Array<() => void> = [];
  private closing = false;
  private readonly buffers = new RequestBuffers();

  constructor(
    private readonly socket: Socket,
    private readonly reader: SocketReader,
    private readonly device: BlockDevice,
    private readonly opts: { readOnly: boolean; structured: boolean; allocationContext: boolean; limiter?: Limiter },
  ) {}

  async run(): Promise<void> {
    try {
      while (!this.closing) {
        const header = await this.reader.read(28);
        // Stopped while waiting: a request that was never started is never answered either.
        if (this.closing) break;
        if (header.readUInt32BE(0) !== REQUEST_MAGIC) break; // out of sync: hard disconnect
        const request: Request = {
          flags: header.readUInt16BE(4),
          type: header.readUInt16BE(6),
          cookie: Buffer.from(header.subarray(8, 16)),
          offset: header.readBigUInt64BE(16),
          length: header.readUInt32BE(24),
        };
        if (request.type === Cmd.DISC) break;
        let payload: Buffer | undefined;
        // A large write's payload buffer, given back once the write is done. One that never gets
        // that far is left to the collector: the connection and its buffers are ending.
        let release: (() => void) | undefined;
        if (request.type === Cmd.WRITE) {
          if (request.length > MAX_PAYLOAD) {
            // Too big to take in: the spec allows a hard disconnect above the advertised maximum.
            this.replyError(request, Errno.EINVAL);
            break;
          }
          if (request.length >= RequestBuffers.MIN) {
            const taken = this.buffers.take(request.length);
            release = taken.release;
            payload = await this.reader.read(request.length, taken.data);
          } else {
            payload = await this.reader.read(request.length);
          }
        }
        while (this.inFlight >= MAX_IN_FLIGHT) await new Promise<void>((resolve) => this.idle.push(resolve));
        if (this.closing) break;
        this.inFlight++;
        void this.handle(request, payload).finally(() => {
          release?.();
          this.inFlight--;
          this.idle.shift()?.();
          if (this.inFlight === 0) for (const wake of this.idle.splice(0)) wake();
        });
      }
    } catch {
      // The client went away (EOF mid-request, reset): finish what is in flight below.
    }
    this.closing = true;
    await this.drain();
  }

  /** Waits for every in-flight request to be answered. */
  async drain(): Promise<void> {
    while (this.inFlight > 0) await new Promise<void>((resolve) => this.idle.push(resolve));
  }

  /** Stops taking new requests (shutdown, export removed); in-flight ones still finish. */
  stop(): void {
    this.closing = true;
  }

  private check(request: Request, pastEnd: number): { offset: number; length: number } {
    const unknown = request.flags & ~(ALLOWED_FLAGS[request.type] ?? 0);
    if (ALLOWED_FLAGS[request.type] === undefined) throw new CommandError(Errno.EINVAL, `unknown command ${request.type}`);
    if (unknown) throw new CommandError(Errno.EINVAL, `unknown flags ${unknown}`);
    if (request.flags & CmdFlag.DF && !this.opts.structured) throw new CommandError(Errno.EINVAL, "DF without structured replies");
    const end = request.offset + BigInt(request.length);
    if (end > BigInt(this.device.size)) throw new CommandError(pastEnd, "past the end of the export");
    return { offset: Number(request.offset), length: request.length };
  }

  private async handle(request: Request, payload?: Buffer): Promise<void> {
    try {
      switch (request.type) {
        case Cmd.READ:
          return await this.read(request);
        case Cmd.WRITE: {
          const { offset } = this.check(request, Errno.ENOSPC);
          if (this.opts.readOnly) throw new CommandError(Errno.EPERM, "read-only export");
          await this.opts.limiter?.take("write", request.length);
          await this.device.pwrite(payload as Buffer, offset, { fua: (request.flags & CmdFlag.FUA) !== 0 });
          return this.replyOk(request);
        }
        case Cmd.FLUSH:
          this.check(request, Errno.EINVAL);
          if (!this.opts.readOnly) await this.device.flush();
          return this.replyOk(request);
        case Cmd.TRIM: {
          const { offset, length } = this.check(request, Errno.EINVAL);
          if (this.opts.readOnly) throw new CommandError(Errno.EPERM, "read-only export");
          await this.device.trim(offset, length);
          if (request.flags & CmdFlag.FUA) await this.device.flush();
          return this.replyOk(request);
        }
        case Cmd.WRITE_ZEROES: {
          const { offset, length } = this.check(request, Errno.ENOSPC);
          if (this.opts.readOnly) throw new CommandError(Errno.EPERM, "read-only export");
          await this.opts.limiter?.take("write", length);
          await this.device.zero(offset, length, { mayTrim: (request.flags & CmdFlag.NO_HOLE) === 0 });
          if (request.flags & CmdFlag.FUA) await this.device.flush();
          return this.replyOk(request);
        }
        case Cmd.CACHE:
          this.check(request, Errno.EINVAL);
          return this.replyOk(request); // a hint; the page cache does the rest
        case Cmd.BLOCK_STATUS:
          return await this.blockStatus(request);
        default:
          throw new CommandError(Errno.EINVAL, `unknown command ${request.type}`);
      }
    } catch (err) {
      this.replyError(request, errnoOf(err), err instanceof Error ? err.message : String(err));
    }
  }

  private async read(request: Request): Promise<void> {
    const { offset, length } = this.check(request, Errno.EINVAL);
    if (length > MAX_PAYLOAD) throw new CommandError(Errno.EINVAL, "read larger than the maximum payload");
    await this.opts.limiter?.take("read", length);
    const { data, release } = this.buffers.take(length);
    let sent = false;
    try {
      if (!this.opts.structured) {
        // A simple reply commits to the data once its header is sent: read first, then answer.
        await this.readExactly(data, offset);
        sent = this.send(release, this.simpleHeader(request, 0), data);
        return;
      }
      try {
        await this.readExactly(data, offset);
      } catch (err) {
        // The error of a structured read says where it happened.
        const message = Buffer.from(err instanceof Error ? err.message.slice(0, 1024) : "read failed");
        const body = Buffer.alloc(4 + 2 + message.length + 8);
        body.writeUInt32BE(errnoOf(err), 0);
        body.writeUInt16BE(message.length, 4);
        message.copy(body, 6);
        body.writeBigUInt64BE(BigInt(offset), 6 + message.length);
        this.send(undefined, this.chunkHeader(request, Chunk.ERROR_OFFSET, CHUNK_DONE, body.length), body);
        return;
      }
      if (length > 0 && isAllZero(data)) {
        const hole = Buffer.alloc(12);
        hole.writeBigUInt64BE(BigInt(offset), 0);
        hole.writeUInt32BE(length, 8);
        this.send(undefined, this.chunkHeader(request, Chunk.OFFSET_HOLE, CHUNK_DONE, 12), hole);
        return;
      }
      const head = Buffer.alloc(8);
      head.writeBigUInt64BE(BigInt(offset), 0);
      sent = this.send(release, this.chunkHeader(request, Chunk.OFFSET_DATA, CHUNK_DONE, 8 + length), head, data);
    } finally {
      // A buffer that went out is handed back by the socket once written, any other one now.
      if (!sent) release();
    }
  }

  /**
   * `length` bytes of the export at `offset`, and nothing else. The buffer is recycled memory
   * (zeroing every read up front would cost the hot path dearly), so whatever the device did
   * not fill by its own count is zeroed here: a file shortened behind the server's back stops
   * at its end, and the memory after that may hold another export's data. Past the end reads
   * as zeroes, as a file's hole would. A count the device cannot have read is EIO.
   */
  private async readExactly(data: Buffer, offset: number): Promise<void> {
    const length = data.length;
    const got: unknown = await this.device.pread(data, offset);
    if (typeof got !== "number" || !Number.isInteger(got) || got < 0 || got > length) {
      throw new CommandError(Errno.EIO, `the device reported ${String(got)} bytes read of ${length}`);
    }
    if (got < length) data.fill(0, got);
  }

  private async blockStatus(request: Request): Promise<void> {
    if (!this.opts.structured || !this.opts.allocationContext) throw new CommandError(Errno.EINVAL, "no metadata context was negotiated");
    const { offset, length } = this.check(request, Errno.EINVAL);
    if (length === 0) throw new CommandError(Errno.EINVAL, "zero-length block status");
    let extents = await this.device.extents(offset, length);
    if (request.flags & CmdFlag.REQ_ONE) extents = extents.slice(0, 1);
    const body = Buffer.alloc(4 + 8 * extents.length);
    body.writeUInt32BE(BASE_ALLOCATION_ID, 0);
    let at = 4;
    let count = 0;
    for (const e of extents) {
      const start = Math.max(e.offset, offset);
      const span = Math.min(e.offset + e.length, offset + length) - start;
      if (span <= 0) continue;
      body.writeUInt32BE(Math.min(span, U32_MAX_ALIGNED), at);
      body.writeUInt32BE((e.hole ? STATE_HOLE : 0) | (e.zero ? STATE_ZERO : 0), at + 4);
      at += 8;
      count++;
      if (span > U32_MAX_ALIGNED) break; // the client asks again for the rest
    }
    if (count === 0) throw new CommandError(Errno.EIO, "no extents for the range");
    this.send(undefined, this.chunkHeader(request, Chunk.BLOCK_STATUS, CHUNK_DONE, at), body.subarray(0, at));
  }

  private simpleHeader(request: Request, error: number): Buffer {
    const header = Buffer.alloc(16);
    header.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
    header.writeUInt32BE(error, 4);
    request.cookie.copy(header, 8);
    return header;
  }

  private chunkHeader(request: Request, type: number, flags: number, length: number): Buffer {
    const header = Buffer.alloc(20);
    header.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
    header.writeUInt16BE(flags, 4);
    header.writeUInt16BE(type, 6);
    request.cookie.copy(header, 8);
    header.writeUInt32BE(length, 16);
    return header;
  }

  private replyOk(request: Request): void {
    if (this.opts.structured) this.send(undefined, this.chunkHeader(request, Chunk.NONE, CHUNK_DONE, 0));
    else this.send(undefined, this.simpleHeader(request, 0));
  }

  private replyError(request: Request, errno: number, message = ""): void {
    if (!this.opts.structured) {
      this.send(undefined, this.simpleHeader(request, errno));
      return;
    }
    const text = Buffer.from(message.slice(0, 1024), "utf8");
    const body = Buffer.alloc(6 + text.length);
    body.writeUInt32BE(errno, 0);
    body.writeUInt16BE(text.length, 4);
    text.copy(body, 6);
    this.send(undefined, this.chunkHeader(request, Chunk.ERROR, CHUNK_DONE, body.length), body);
  }

  /**
   * One reply, its pieces written back to back in one synchronous call: no other reply can get
   * between them (JavaScript runs one thing at a time), and corking sends them as one write.
   */
  private send(written: (() => void) | undefined, ...parts: Buffer[]): boolean {
    if (this.socket.destroyed) return false;
    this.socket.cork();
    // `written` runs once the socket is done with the reply (sent, or dropped with the socket).
    parts.forEach((part, i) => this.socket.write(part, i === parts.length - 1 ? written : undefined));
    this.socket.uncork();
    return true;
  }
}
