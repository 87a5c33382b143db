/**
 * The buffers one connection's large reads are served from and its large writes are received
 * into, each reused once its request is done (a read's reply written to the socket, a write's
 * payload written to the device). A fresh 1 MiB buffer per request is memory outside the
 * JavaScript heap that only a full garbage collection gives back: with 16 requests in flight the
 * server held hundreds of MiB and spent a fifth of its time collecting (bench/README.md). Small
 * requests' buffers come from Node's own pool and are not kept here.
 */
export class RequestBuffers {
  private readonly free = new Map<number, Buffer[]>();
  private keptBytes = 0;

  /** Requests below this size are left to Buffer.allocUnsafe (cheap, from Node's slab). */
  static readonly MIN = 64 * 1024;
  /** At most this much is kept per connection while no request needs it. */
  static readonly KEEP = 32 * 1024 * 1024;

  /**
   * A buffer of exactly `length` bytes, of recycled memory (the caller fills it whole), and the
   * call that hands it back once nothing refers to it any more.
   */
  take(length: number): { data: Buffer; release: () => void } {
    if (length < RequestBuffers.MIN) return { data: Buffer.allocUnsafe(length), release: () => undefined };
    const capacity = 2 ** Math.ceil(Math.log2(length));
    const kept = this.free.get(capacity)?.pop();
    if (kept) this.keptBytes -= capacity;
    const whole = kept ?? Buffer.allocUnsafeSlow(capacity);
    let released = false;
    return {
      data: whole.subarray(0, length),
      release: () => {
        if (released) return;
        released = true;
        if (this.keptBytes + capacity > RequestBuffers.KEEP) return;
        const list = this.free.get(capacity) ?? [];
        list.push(whole);
        this.free.set(capacity, list);
        this.keptBytes += capacity;
      },
    };
  }
}
