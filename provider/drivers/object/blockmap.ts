// A map from block number to a number, for maps of millions of blocks: pages of 4,096 slots in
// Float64Arrays, made only where some block is set, so a sparse volume costs almost nothing and
// a full one 8 bytes a block (a JavaScript Map costs 5-10 times that, and stops at 2^24 keys).
// Ranges of unset blocks are skipped a page at a time.

const PAGE = 4096;

export class BlockMap {
  private readonly pages = new Map<number, { slots: Float64Array; used: number }>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(block: number): number | undefined {
    const page = this.pages.get(Math.floor(block / PAGE));
    if (!page) return undefined;
    const v = page.slots[block % PAGE];
    return Number.isNaN(v) ? undefined : v;
  }

  has(block: number): boolean {
    return this.get(block) !== undefined;
  }

  set(block: number, value: number): void {
    const p = Math.floor(block / PAGE);
    let page = this.pages.get(p);
    if (!page) {
      page = { slots: new Float64Array(PAGE).fill(NaN), used: 0 };
      this.pages.set(p, page);
    }
    const i = block % PAGE;
    if (Number.isNaN(page.slots[i])) {
      page.used++;
      this.count++;
    }
    page.slots[i] = value;
  }

  delete(block: number): boolean {
    const p = Math.floor(block / PAGE);
    const page = this.pages.get(p);
    if (!page) return false;
    const i = block % PAGE;
    if (Number.isNaN(page.slots[i])) return false;
    page.slots[i] = NaN;
    this.count--;
    if (--page.used === 0) this.pages.delete(p);
    return true;
  }

  /** Every set block, in block order. */
  *entries(): IterableIterator<[number, number]> {
    for (const p of [...this.pages.keys()].sort((a, b) => a - b)) {
      const page = this.pages.get(p);
      if (!page) continue;
      for (let i = 0; i < PAGE; i++) if (!Number.isNaN(page.slots[i])) yield [p * PAGE + i, page.slots[i]];
    }
  }

  [Symbol.iterator](): IterableIterator<[number, number]> {
    return this.entries();
  }

  *values(): IterableIterator<number> {
    for (const [, v] of this.entries()) yield v;
  }

  /** The first block at or after `from` (and before `end`) that is set, or `end`. */
  nextSet(from: number, end: number): number {
    let b = from;
    while (b < end) {
      const p = Math.floor(b / PAGE);
      const page = this.pages.get(p);
      if (!page) {
        b = (p + 1) * PAGE;
        continue;
      }
      const stop = Math.min(end, (p + 1) * PAGE);
      for (; b < stop; b++) if (!Number.isNaN(page.slots[b % PAGE])) return b;
    }
    return end;
  }
}
