// Blocks read from the store, by where they are stored. Stored objects are never overwritten,
// so an entry can never be stale: no revalidation, ever. A plain LRU bounded by bytes, shared by
// every volume of a backend in this process.

export class BlockCache {
  private readonly entries = new Map<string, Buffer>();
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  get(key: string): Buffer | undefined {
    const hit = this.entries.get(key);
    if (hit) {
      this.entries.delete(key);
      this.entries.set(key, hit);
    }
    return hit;
  }

  set(key: string, block: Buffer): void {
    if (this.maxBytes <= 0 || block.length > this.maxBytes) return;
    const old = this.entries.get(key);
    if (old) {
      this.bytes -= old.length;
      this.entries.delete(key);
    }
    this.entries.set(key, block);
    this.bytes += block.length;
    while (this.bytes > this.maxBytes) {
      const [k, v] = this.entries.entries().next().value as [string, Buffer];
      this.entries.delete(k);
      this.bytes -= v.length;
    }
  }
}
