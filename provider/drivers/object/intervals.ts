// Sorted, disjoint block ranges [start, end): what a trim of a whole device becomes, instead of
// one entry per block (a 64 GiB discard is 16 million 4 KiB blocks, and one range).

export class Intervals {
  /** [start, end) pairs, sorted, never touching. */
  private items: Array<[number, number]> = [];

  get list(): ReadonlyArray<[number, number]> {
    return this.items;
  }

  get empty(): boolean {
    return this.items.length === 0;
  }

  /** Index of the first range that ends after `block`. */
  private firstEndingAfter(block: number): number {
    let lo = 0;
    let hi = this.items.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.items[mid][1] <= block) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  has(block: number): boolean {
    const i = this.firstEndingAfter(block);
    return i < this.items.length && this.items[i][0] <= block;
  }

  /** The range holding `block`, or where the next one starts (Infinity when none). */
  around(block: number): { inside: boolean; end: number } {
    const i = this.firstEndingAfter(block);
    if (i >= this.items.length) return { inside: false, end: Infinity };
    const [s, e] = this.items[i];
    return s <= block ? { inside: true, end: e } : { inside: false, end: s };
  }

  add(start: number, end: number): void {
    if (end <= start) return;
    const i = this.firstEndingAfter(start - 1);
    let j = i;
    let s = start;
    let e = end;
    while (j < this.items.length && this.items[j][0] <= end) {
      s = Math.min(s, this.items[j][0]);
      e = Math.max(e, this.items[j][1]);
      j++;
    }
    this.items.splice(i, j - i, [s, e]);
  }

  remove(start: number, end: number): void {
    if (end <= start) return;
    const out: Array<[number, number]> = [];
    for (const [s, e] of this.items) {
      if (e <= start || s >= end) out.push([s, e]);
      else {
        if (s < start) out.push([s, start]);
        if (e > end) out.push([end, e]);
      }
    }
    this.items = out;
  }

  static from(list: ReadonlyArray<readonly [number, number]> | undefined): Intervals {
    const i = new Intervals();
    for (const [s, e] of list ?? []) i.add(s, e);
    return i;
  }
}
