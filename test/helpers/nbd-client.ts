import { connect, type Socket } from "node:net";
import { SocketReader } from "../../provider/util/nbd/reader";
import { IHAVEOPT, Option, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC } from "../../provider/util/nbd/protocol";

/** A bare NBD client that sends exactly the bytes a test wants, broken ones included. */
export class RawClient {
  private constructor(readonly socket: Socket, readonly reader: SocketReader) {}

  static async connect(port: number): Promise<RawClient> {
    const socket = connect(port, "127.0.0.1");
    await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
    return new RawClient(socket, new SocketReader(socket));
  }

  read(n: number): Promise<Buffer> {
    return this.reader.read(n);
  }

  write(data: Buffer): void {
    this.socket.write(data);
  }

  /** True when the server closes the connection within `ms` without sending anything more. */
  async closed(ms = 2000): Promise<boolean> {
    return Promise.race([
      this.reader.read(1).then(() => false, () => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms)),
    ]);
  }

  /** Reads the 18-byte greeting and answers with client flags. */
  async greet(clientFlags = 3): Promise<number> {
    const greeting = await this.read(18);
    this.write(u32(clientFlags));
    return greeting.readUInt16BE(16);
  }

  option(option: number, data: Buffer = Buffer.alloc(0), magic = IHAVEOPT): void {
    const head = Buffer.alloc(16);
    head.writeBigUInt64BE(magic, 0);
    head.writeUInt32BE(option, 8);
    head.writeUInt32BE(data.length, 12);
    this.write(Buffer.concat([head, data]));
  }

  async optionReply(): Promise<{ option: number; type: number; data: Buffer }> {
    const head = await this.read(20);
    const length = head.readUInt32BE(16);
    return { option: head.readUInt32BE(8), type: head.readUInt32BE(12), data: await this.read(length) };
  }

  /** Replies to one option up to and including its ACK or error. */
  async optionReplies(): Promise<Array<{ type: number; data: Buffer }>> {
    const out: Array<{ type: number; data: Buffer }> = [];
    for (;;) {
      const r = await this.optionReply();
      out.push(r);
      if (r.type === 1 || r.type >= 2 ** 31) return out;
    }
  }

  /** Handshake to transmission: structured replies and base:allocation unless told not to. */
  async go(name: string, opts: { structured?: boolean; meta?: boolean } = {}): Promise<{ size: bigint; flags: number }> {
    await this.greet();
    if (opts.structured !== false) {
      this.option(Option.STRUCTURED_REPLY);
      await this.optionReplies();
      if (opts.meta !== false) {
        this.option(Option.SET_META_CONTEXT, metaRequest(name, ["base:allocation"]));
        await this.optionReplies();
      }
    }
    this.option(Option.GO, infoRequest(name, []));
    const replies = await this.optionReplies();
    const info = replies.find((r) => r.type === 3 && r.data.readUInt16BE(0) === 0);
    if (!info) throw new Error(`GO failed: ${replies.map((r) => r.type).join(",")}`);
    return { size: info.data.readBigUInt64BE(2), flags: info.data.readUInt16BE(10) };
  }

  request(type: number, opts: { flags?: number; cookie?: bigint; offset?: bigint; length?: number; payload?: Buffer; magic?: number } = {}): void {
    const head = Buffer.alloc(28);
    head.writeUInt32BE(opts.magic ?? REQUEST_MAGIC, 0);
    head.writeUInt16BE(opts.flags ?? 0, 4);
    head.writeUInt16BE(type, 6);
    head.writeBigUInt64BE(opts.cookie ?? 1n, 8);
    head.writeBigUInt64BE(opts.offset ?? 0n, 16);
    head.writeUInt32BE(opts.length ?? opts.payload?.length ?? 0, 24);
    this.write(opts.payload ? Buffer.concat([head, opts.payload]) : head);
  }

  async simpleReply(dataLength = 0): Promise<{ error: number; cookie: bigint; data: Buffer }> {
    const head = await this.read(16);
    if (head.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) throw new Error("not a simple reply");
    const error = head.readUInt32BE(4);
    return { error, cookie: head.readBigUInt64BE(8), data: error ? Buffer.alloc(0) : await this.read(dataLength) };
  }

  /** Structured chunks of one reply, up to the one flagged DONE. */
  async structuredReply(): Promise<{ cookie: bigint; chunks: Array<{ type: number; data: Buffer }> }> {
    const chunks: Array<{ type: number; data: Buffer }> = [];
    let cookie = 0n;
    for (;;) {
      const head = await this.read(20);
      if (head.readUInt32BE(0) !== STRUCTURED_REPLY_MAGIC) throw new Error("not a structured reply");
      cookie = head.readBigUInt64BE(8);
      chunks.push({ type: head.readUInt16BE(6), data: await this.read(head.readUInt32BE(16)) });
      if (head.readUInt16BE(4) & 1) return { cookie, chunks };
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n, 0);
  return b;
}

export function infoRequest(name: string, infos: number[]): Buffer {
  const n = Buffer.from(name, "utf8");
  const b = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((info, i) => b.writeUInt16BE(info, 6 + n.length + 2 * i));
  return b;
}

export function metaRequest(name: string, queries: string[]): Buffer {
  const parts = [u32(Buffer.byteLength(name)), Buffer.from(name), u32(queries.length)];
  for (const q of queries) parts.push(u32(Buffer.byteLength(q)), Buffer.from(q));
  return Buffer.concat(parts);
}
