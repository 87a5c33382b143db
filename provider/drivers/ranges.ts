import { InvalidInputError } from "../util/errors";

// The checks every BlockDevice makes before touching storage, so a bad offset from a client
// (the NBD server passes them through) is an error naming it, never a read past the end.

export function checkRange(size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0 || offset + length > size) {
    throw new InvalidInputError("offset", `range ${offset}+${length} is outside the device (size ${size})`);
  }
}

export function checkWritable(readOnly: boolean): void {
  if (readOnly) throw new InvalidInputError("mode", "the device is open read-only");
}
