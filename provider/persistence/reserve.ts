import { closeSync, openSync, statSync, unlinkSync, writeSync } from "node:fs";
import { isErrno } from "../util/errors";

const RESERVE_BYTES = 1024 * 1024;

/**
 * A file of real blocks beside a store's records. Pools fill up through users' writes, and the
 * records usually live on the same filesystem (the default keeps them beside the data): with
 * nothing left, even recording a delete fails, and the user cannot free space through kindling.
 * Giving this file back lets that one change through; it is made again when space allows.
 */
export class SpaceReserve {
  constructor(readonly path: string, private readonly bytes = RESERVE_BYTES) {}

  /** Makes the reserve if it is missing or short; quietly leaves it out when there is no room. */
  ensure(): void {
    try {
      if (statSync(this.path).size >= this.bytes) return;
    } catch (err) {
      if (!isErrno(err, "ENOENT")) return;
    }
    let fd: number | undefined;
    try {
      fd = openSync(this.path, "w", 0o600);
      // Not zeroes: some filesystems store zero blocks as holes, which would reserve nothing.
      const chunk = Buffer.alloc(64 * 1024, 0xa5);
      for (let done = 0; done < this.bytes; done += chunk.length) writeSync(fd, chunk, 0, Math.min(chunk.length, this.bytes - done), done);
    } catch {
      // No room (or a read-only store): no reserve now; the next open tries again.
      if (fd !== undefined) this.release();
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }

  /** The reserve is there, whole. */
  present(): boolean {
    try {
      return statSync(this.path).size >= this.bytes;
    } catch {
      return false;
    }
  }

  /** Frees the reserve's space; true when there was one. */
  release(): boolean {
    try {
      unlinkSync(this.path);
      return true;
    } catch {
      return false;
    }
  }
}
