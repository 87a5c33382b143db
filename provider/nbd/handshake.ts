import type { Socket } from "node:net";
import type { BlockDevice } from "../drivers/contract";
import type { ExportSource, ExportTable } from "./exports";
import { transmissionFlags } from "./transmission";
import { SocketReader } from "../util/nbd/reader";
import { upgrade, type TlsSettings } from "./tls";
import {
  BASE_ALLOCATION, BASE_ALLOCATION_ID, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT, Info, MAX_OPTION_LENGTH,
  MAX_PAYLOAD, MIN_BLOCK, NBDMAGIC, OPTION_REPLY_MAGIC, Option, PREFERRED_BLOCK, Reply,
} from "../util/nbd/protocol";

export interface HandshakeResult {
  /** The connection from here on: the TLS socket after STARTTLS. */
  socket: Socket;
  reader: SocketReader;
  source: ExportSource;
  /** The device the client was told about (size, flags): the one transmission must use. */
  device: BlockDevice;
  readOnly: boolean;
  structured: boolean;
  allocationContext: boolean;
}

/**
 * Gives the device of an export for this connection. The caller owns it: it keeps one device
 * per connection (opened again only when the client turns to another export) and closes it.
 */
export type OpenExport = (source: ExportSource) => Promise<BlockDevice>;

class Closed extends Error {}

/**
 * The fixed-newstyle option phase. Resolves with the export the client chose and its open
 * device, or undefined when the client aborted or broke the protocol (the socket is closed
 * then). Every option gets an answer; an unknown one ERR_UNSUP with its data consumed, so the
 * client keeps in sync. What INFO, GO and EXPORT_NAME report comes from the device that will
 * serve the transmission, so the size and flags a client was told are the ones it gets.
 */
export async function handshake(socket: Socket, reader: SocketReader, exports: ExportTable, open: OpenExport, tls?: TlsSettings): Promise<HandshakeResult | undefined> {
  const greeting = Buffer.alloc(18);
  greeting.writeBigUInt64BE(NBDMAGIC, 0);
  greeting.writeBigUInt64BE(IHAVEOPT, 8);
  greeting.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
  socket.write(greeting);

  const clientFlags = (await reader.read(4)).readUInt32BE(0);
  if (clientFlags & ~(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES) || !(clientFlags & FLAG_FIXED_NEWSTYLE)) {
    socket.destroy(); // unknown client flags: the spec says close
    return undefined;
  }
  const noZeroes = (clientFlags & FLAG_NO_ZEROES) !== 0;
  // With TLS configured it is required: nothing but STARTTLS and ABORT before it.
  let secured = !tls;
  let structured = false;
  let metaExport: string | undefined;
  let allocationContext = false;

  const reply = (option: number, type: number, data: Buffer = Buffer.alloc(0)) => {
    const header = Buffer.alloc(20);
    header.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(type, 12);
    header.writeUInt32BE(data.length, 16);
    socket.write(data.length ? Buffer.concat([header, data]) : header);
  };
  const text = (s: string) => Buffer.from(s, "utf8");
  const describe = async (source: ExportSource) => {
    const device = await open(source);
    const readOnly = source.readOnly || device.readOnly;
    return { device, readOnly, size: device.size, flags: transmissionFlags(device, readOnly, structured) };
  };

  try {
    for (;;) {
      const head = await reader.read(16);
      if (head.readBigUInt64BE(0) !== IHAVEOPT) throw new Closed("bad option magic");
      const option = head.readUInt32BE(8);
      const length = head.readUInt32BE(12);
      if (length > MAX_OPTION_LENGTH) throw new Closed("option too long");
      const data = await reader.read(length);

      if (!secured && option !== Option.STARTTLS && option !== Option.ABORT) {
        if (option === Option.EXPORT_NAME) throw new Closed("EXPORT_NAME before STARTTLS");
        reply(option, Reply.ERR_TLS_REQD, text("this server requires TLS: send STARTTLS first"));
        continue;
      }

      switch (option) {
        case Option.EXPORT_NAME: {
          const source = exports.get(data.toString("utf8"));
          if (!source) throw new Closed("unknown export"); // EXPORT_NAME cannot answer an error
          const described = await describe(source).catch((err: Error) => {
            throw new Closed(`export cannot be opened: ${err.message}`);
          });
          const tail = Buffer.alloc(10 + (noZeroes ? 0 : 124));
          tail.writeBigUInt64BE(BigInt(described.size), 0);
          tail.writeUInt16BE(described.flags, 8);
          socket.write(tail);
          return { socket, reader, source, device: described.device, readOnly: described.readOnly, structured, allocationContext: allocationContext && metaExport === source.name };
        }
        case Option.ABORT:
          reply(option, Reply.ACK);
          socket.end();
          return undefined;
        case Option.LIST:
          if (length !== 0) {
            reply(option, Reply.ERR_INVALID, text("LIST takes no data"));
            break;
          }
          for (const name of exports.names()) {
            const bytes = text(name);
            const item = Buffer.alloc(4 + bytes.length);
            item.writeUInt32BE(bytes.length, 0); // a length in bytes, not characters
            bytes.copy(item, 4);
            reply(option, Reply.SERVER, item);
          }
          reply(option, Reply.ACK);
          break;
        case Option.STARTTLS:
          if (!tls) {
            reply(option, Reply.ERR_POLICY, text("this server has no TLS configured"));
          } else if (secured || length !== 0) {
            reply(option, Reply.ERR_INVALID, text(secured ? "TLS is already on" : "STARTTLS takes no data"));
          } else {
            reply(option, Reply.ACK);
            socket = await upgrade(socket, tls);
            reader = new SocketReader(socket);
            secured = true;
            // What was negotiated in the clear does not carry over.
            structured = false;
            metaExport = undefined;
            allocationContext = false;
          }
          break;
        case Option.INFO:
        case Option.GO: {
          const request = parseInfoRequest(data);
          if (!request) {
            reply(option, Reply.ERR_INVALID, text("malformed INFO/GO request"));
            break;
          }
          const source = exports.get(request.name);
          if (!source) {
            reply(option, Reply.ERR_UNKNOWN, text(`no export named ${JSON.stringify(request.name)}`));
            break;
          }
          let described: Awaited<ReturnType<typeof describe>>;
          try {
            described = await describe(source);
          } catch (err) {
            reply(option, Reply.ERR_UNKNOWN, text(`export ${request.name} cannot be opened: ${(err as Error).message}`));
            break;
          }
          const info = Buffer.alloc(12);
          info.writeUInt16BE(Info.EXPORT, 0);
          info.writeBigUInt64BE(BigInt(described.size), 2);
          info.writeUInt16BE(described.flags, 10);
          reply(option, Reply.INFO, info);
          if (request.infos.includes(Info.NAME)) {
            const name = text(request.name);
            const item = Buffer.alloc(2 + name.length);
            item.writeUInt16BE(Info.NAME, 0);
            name.copy(item, 2);
            reply(option, Reply.INFO, item);
          }
          if (request.infos.includes(Info.DESCRIPTION) && source.description) {
            const description = text(source.description);
            const item = Buffer.alloc(2 + description.length);
            item.writeUInt16BE(Info.DESCRIPTION, 0);
            description.copy(item, 2);
            reply(option, Reply.INFO, item);
          }
          const sizes = Buffer.alloc(14); // always sent: clients that did not ask may ignore it
          sizes.writeUInt16BE(Info.BLOCK_SIZE, 0);
          sizes.writeUInt32BE(MIN_BLOCK, 2);
          sizes.writeUInt32BE(PREFERRED_BLOCK, 6);
          sizes.writeUInt32BE(MAX_PAYLOAD, 10);
          reply(option, Reply.INFO, sizes);
          reply(option, Reply.ACK);
          if (option === Option.GO) {
            return { socket, reader, source, device: described.device, readOnly: described.readOnly, structured, allocationContext: allocationContext && metaExport === request.name };
          }
          break;
        }
        case Option.STRUCTURED_REPLY:
          if (length !== 0 || structured) {
            reply(option, Reply.ERR_INVALID, text(structured ? "structured replies are already on" : "STRUCTURED_REPLY takes no data"));
            break;
          }
          structured = true;
          reply(option, Reply.ACK);
          break;
        case Option.LIST_META_CONTEXT:
        case Option.SET_META_CONTEXT: {
          if (option === Option.SET_META_CONTEXT && !structured) {
            reply(option, Reply.ERR_INVALID, text("negotiate STRUCTURED_REPLY first"));
            break;
          }
          const request = parseMetaRequest(data);
          if (!request) {
            reply(option, Reply.ERR_INVALID, text("malformed meta context request"));
            break;
          }
          if (!exports.get(request.name)) {
            reply(option, Reply.ERR_UNKNOWN, text(`no export named ${JSON.stringify(request.name)}`));
            break;
          }
          // We have one context. LIST with no query lists it; "base:" or the full name select it.
          const wanted = request.queries.length === 0
            ? option === Option.LIST_META_CONTEXT
            : request.queries.some((q) => q === BASE_ALLOCATION || (option === Option.LIST_META_CONTEXT && q === "base:"));
          if (option === Option.SET_META_CONTEXT) {
            metaExport = request.name;
            allocationContext = wanted;
          }
          if (wanted) {
            const name = text(BASE_ALLOCATION);
            const item = Buffer.alloc(4 + name.length);
            item.writeUInt32BE(option === Option.SET_META_CONTEXT ? BASE_ALLOCATION_ID : 0, 0);
            name.copy(item, 4);
            reply(option, Reply.META_CONTEXT, item);
          }
          reply(option, Reply.ACK);
          break;
        }
        case Option.EXTENDED_HEADERS:
          reply(option, Reply.ERR_UNSUP, text("extended headers are not supported"));
          break;
        default:
          reply(option, Reply.ERR_UNSUP, text(`option ${option} is not supported`));
      }
    }
  } catch (err) {
    socket.destroy();
    if (err instanceof Closed) return undefined;
    return undefined; // the client went away mid-handshake
  }
}

function parseInfoRequest(data: Buffer): { name: string; infos: number[] } | undefined {
  if (data.length < 6) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 6) return undefined;
  const name = data.subarray(4, 4 + nameLength).toString("utf8");
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 6 + nameLength + 2 * count) return undefined;
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(data.readUInt16BE(6 + nameLength + 2 * i));
  return { name, infos };
}

function parseMetaRequest(data: Buffer): { name: string; queries: string[] } | undefined {
  if (data.length < 8) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 8) return undefined;
  const name = data.subarray(4, 4 + nameLength).toString("utf8");
  let at = 4 + nameLength;
  const count = data.readUInt32BE(at);
  at += 4;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return undefined;
    const length = data.readUInt32BE(at);
    at += 4;
    if (at + length > data.length) return undefined;
    queries.push(data.subarray(at, at + length).toString("utf8"));
    at += length;
  }
  return at === data.length ? { name, queries } : undefined;
}
