// Blocks read from the store, by where they are stored. Stored objects are never overwritten,
// so an entry can never be stale: no revalidation, ever. A plain LRU bounded by bytes, shared by
// every volume of a backend in this process.
//
// An entry is a view into a larger Buffer (a line of a GET's answer of several MiB, or of a
// record's body just written), and that Buffer stays in memory for as long as any view of it is
// cached. So the bound counts the memory the entries keep alive, each Buffer once, however many
// entries share it; counting the views alone could let a few lines of many large answers hold
// many times the bound.
//
// The cache also keeps the count of bytes being read ahead into it, for all the readers that
// share it: read-ahead is bounded together with the memory it will fill.

/** The most bytes of read-ahead on their way at once, whatever the cache's size. */
const MAX_READ_AHEAD_IN_FLIGHT = 64 * 1024 * 1024;

export class BlockCache {
  private readonly entries = new Map<string, Buffer>();
  /** How many entries are views of each piece of memory. */
  private readonly views = new Map<ArrayBufferLike, number>();
  private bytes = 0;
  private aheadInFlight = 0;
  /** Read-ahead may have this much on its way at once: a quarter of the cache, so it never pushes out much of what is cached. */
  readonly readAheadLimit: number;

  constructor(readonly maxBytes: number) {
    this.readAheadLimit = Math.max(0, Math.min(MAX_READ_AHEAD_IN_FLIGHT, Math.floor(maxBytes / 4)));
  }

  /** The memory the entries keep alive, in bytes. */
  get size(): number {
    return this.bytes;
  }

  get(key: string): Buffer | undefined {
    const hit = this.entries.get(key);
    if (hit) {
      this.entries.delete(key);
      this.entries.set(key, hit);
    }
    return hit;
  }

  /** Whether the key is cached, without making it recently used (read-ahead asks this of lines it may fetch). */
  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** Caches a view, unless the memory it keeps alive is more than the whole cache may hold. */
  set(key: string, block: Buffer): void {
    if (this.maxBytes <= 0 || block.buffer.byteLength > this.maxBytes) return;
    const old = this.entries.get(key);
    if (old) {
      this.entries.delete(key);
      this.release(old);
    }
    this.entries.set(key, block);
    this.hold(block);
    while (this.bytes > this.maxBytes) {
      const [k, v] = this.entries.entries().next().value as [string, Buffer];
      this.entries.delete(k);
      this.release(v);
    }
  }

  private hold(view: Buffer): void {
    const n = this.views.get(view.buffer) ?? 0;
    if (n === 0) this.bytes += view.buffer.byteLength;
    this.views.set(view.buffer, n + 1);
  }

  private release(view: Buffer): void {
    const n = this.views.get(view.buffer) ?? 0;
    if (n > 1) return void this.views.set(view.buffer, n - 1);
    this.views.delete(view.buffer);
    this.bytes -= view.buffer.byteLength;
  }

  /** Whether the read-ahead limit leaves room for `bytes` more. */
  roomForReadAhead(bytes: number): boolean {
    return this.aheadInFlight + bytes <= this.readAheadLimit;
  }

  /** Counts `bytes` of read-ahead as on their way (over the limit, when a read waits for them too). */
  reserveReadAhead(bytes: number): void {
    this.aheadInFlight += bytes;
  }

  /** Read-ahead that arrived, or failed. */
  releaseReadAhead(bytes: number): void {
    this.aheadInFlight -= bytes;
  }
}
