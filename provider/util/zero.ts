const ZEROES = Buffer.alloc(1024 * 1024);

/**
 * True when every byte is zero. Compares 1 MiB at a time against a zero buffer with memcmp
 * (Buffer.compare), many times faster than a loop in JavaScript on hot paths (NBD reads, copies).
 */
export function isAllZero(buffer: Buffer): boolean {
  for (let at = 0; at < buffer.length; at += ZEROES.length) {
    const end = Math.min(at + ZEROES.length, buffer.length);
    if (buffer.compare(ZEROES, 0, end - at, at, end) !== 0) return false;
  }
  return true;
}
