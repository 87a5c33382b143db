// Bounds-safe readers for image headers: a header field past the bytes held reads as undefined
// instead of throwing, so a truncated or hostile header can never crash a probe.

export function u8(b: Buffer | undefined, off: number): number | undefined {
  return b && off >= 0 && off + 1 <= b.length ? b.readUInt8(off) : undefined;
}
export function u16le(b: Buffer | undefined, off: number): number | undefined {
  return b && off >= 0 && off + 2 <= b.length ? b.readUInt16LE(off) : undefined;
}
export function u16be(b: Buffer | undefined, off: number): number | undefined {
  return b && off >= 0 && off + 2 <= b.length ? b.readUInt16BE(off) : undefined;
}
export function u32le(b: Buffer | undefined, off: number): number | undefined {
  return b && off >= 0 && off + 4 <= b.length ? b.readUInt32LE(off) : undefined;
}
export function u32be(b: Buffer | undefined, off: number): number | undefined {
  return b && off >= 0 && off + 4 <= b.length ? b.readUInt32BE(off) : undefined;
}
export function u64le(b: Buffer | undefined, off: number): bigint | undefined {
  return b && off >= 0 && off + 8 <= b.length ? b.readBigUInt64LE(off) : undefined;
}
export function u64be(b: Buffer | undefined, off: number): bigint | undefined {
  return b && off >= 0 && off + 8 <= b.length ? b.readBigUInt64BE(off) : undefined;
}

/** A 64-bit size as a number, or undefined when it cannot be one exactly (a size bomb beyond 2^53). */
export function safeNumber(v: bigint | undefined): number | undefined {
  return v !== undefined && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : undefined;
}

/** Whether `b` holds exactly `magic` at `off`. */
export function hasBytes(b: Buffer | undefined, off: number, magic: Buffer | string): boolean {
  const m = typeof magic === "string" ? Buffer.from(magic, "latin1") : magic;
  return !!b && off >= 0 && off + m.length <= b.length && b.subarray(off, off + m.length).equals(m);
}

/**
 * The on-disk bytes of a GUID as Microsoft formats store them (the first three fields little
 * endian, the rest as written), so a VHDX table entry can be compared with the spec's text form.
 */
export function guidBytes(text: string): Buffer {
  const hex = text.replace(/-/g, "");
  const raw = Buffer.from(hex, "hex");
  const out = Buffer.from(raw);
  out.writeUInt32LE(raw.readUInt32BE(0), 0);
  out.writeUInt16LE(raw.readUInt16BE(4), 4);
  out.writeUInt16LE(raw.readUInt16BE(6), 6);
  return out;
}
