import type { Socket } from "node:net";

/**
 * Reads exact byte counts from a socket. A `data` event is not a message: bytes arrive in any
 * split, so every read waits for as many as it asked for. Reading pauses the socket when
 * enough is buffered, which is the server's backpressure against a fast client.
 */
export class SocketReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter?: { size: number; into?: Buffer; resolve: (b: Buffer) => void; reject: (e: Error) => void };
  private ended?: Error;

  constructor(private readonly socket: Socket, private readonly highWater = 8 * 1024 * 1024) {
    socket.on("data", (data: Buffer) => {
      this.chunks.push(data);
      this.buffered += data.length;
      if (this.buffered > this.highWater) socket.pause();
      this.wake();
    });
    const end = (err?: Error) => {
      this.ended ??= err ?? new Error("connection closed");
      this.wake();
    };
    socket.on("end", () => end());
    socket.on("close", () => end());
    socket.on("error", (err) => end(err));
  }

  /**
   * Exactly `size` bytes, or a rejection when the connection ends first. With `into` (of `size`
   * bytes) they are copied there and it is what the promise gives: a buffer the caller reuses.
   */
  read(size: number, into?: Buffer): Promise<Buffer> {
    if (this.waiter) return Promise.reject(new Error("one read at a time"));
    if (into && into.length !== size) return Promise.reject(new Error("the buffer is not the size asked for"));
    return new Promise((resolve, reject) => {
      this.waiter = { size, into, resolve, reject };
      this.wake();
    });
  }

  /**
   * Hands over what was read and not yet taken, and stops reading: the connection's next owner
   * (the native transmission) reads the socket itself. Everything else arrives after this call.
   */
  detach(): Buffer {
    if (this.waiter) throw new Error("a read is waiting");
    this.socket.pause();
    this.socket.removeAllListeners("data");
    // A paused stream may still hold bytes libuv read for it: they come before what is unread.
    for (let more = this.socket.read() as Buffer | null; more; more = this.socket.read() as Buffer | null) this.chunks.push(more);
    const rest = Buffer.concat(this.chunks);
    this.chunks = [];
    this.buffered = 0;
    return rest;
  }

  /** Reads and throws away `size` bytes (a rejected write's payload), in bounded pieces. */
  async skip(size: number): Promise<void> {
    for (let left = size; left > 0; ) {
      const piece = Math.min(left, 4 * 1024 * 1024);
      await this.read(piece);
      left -= piece;
    }
  }

  private wake(): void {
    const waiter = this.waiter;
    if (!waiter) return;
    if (this.buffered >= waiter.size) {
      this.waiter = undefined;
      waiter.resolve(this.take(waiter.size, waiter.into));
      if (this.buffered <= this.highWater && this.socket.isPaused()) this.socket.resume();
    } else if (this.ended) {
      this.waiter = undefined;
      waiter.reject(this.ended);
    } else if (this.socket.isPaused()) {
      this.socket.resume();
    }
  }

  private take(size: number, into?: Buffer): Buffer {
    if (size === 0) return into ?? Buffer.alloc(0);
    const first = this.chunks[0];
    if (!into && first.length >= size) {
      this.buffered -= size;
      if (first.length === size) this.chunks.shift();
      else this.chunks[0] = first.subarray(size);
      return first.subarray(0, size);
    }
    const out = into ?? Buffer.allocUnsafe(size);
    let at = 0;
    while (at < size) {
      const chunk = this.chunks[0];
      const n = Math.min(chunk.length, size - at);
      chunk.copy(out, at, 0, n);
      at += n;
      if (n === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(n);
    }
    this.buffered -= size;
    return out;
  }
}
