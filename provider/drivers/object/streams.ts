// Which reads of a volume are sequential. A reader going forward (nbdcopy, dd, a filesystem's
// own read-ahead) asks for each range right after the last; several may do so at once through
// one volume (nbdcopy reads through four connections, each its own part of the volume, their
// requests interleaved), so "where the last read ended" cannot tell. A small table of recent
// stream ends can: a read that starts where one of them ends continues it; any other read starts
// a candidate in the least recently used slot. A stream earns read-ahead only once reads have
// continued it `confirm` times in a row, so random reads (which continue nothing, or by chance
// once) never get any.

export interface Stream {
  /** The block after the furthest one read. */
  end: number;
  /** How many reads continued it. */
  hits: number;
  /** How far ahead of its reads it is fetched, in bytes (the reader's to grow). */
  window: number;
  /** Blocks before this one are fetched, being fetched, or were asked for already. */
  aheadEnd: number;
  lastUse: number;
}

export class StreamTable {
  private readonly streams: Stream[] = [];
  private clock = 0;

  constructor(
    private readonly slots: number,
    private readonly confirm: number,
  ) {}

  /**
   * Notes a read of blocks [first, end): the stream it continues, once that is confirmed. A read
   * continues a stream when it starts at its end, or after a gap no longer than itself (a
   * reader skipping a little, requests a little out of order); a read that starts before a
   * stream's end is a re-read, not a continuation.
   */
  note(first: number, end: number): Stream | undefined {
    this.clock++;
    let best: Stream | undefined;
    for (const s of this.streams) {
      if (first < s.end || first - s.end > end - first) continue;
      if (!best || first - s.end < first - best.end) best = s;
    }
    if (best) {
      best.end = Math.max(best.end, end);
      best.hits++;
      best.lastUse = this.clock;
      return best.hits >= this.confirm ? best : undefined;
    }
    const fresh: Stream = { end, hits: 0, window: 0, aheadEnd: end, lastUse: this.clock };
    if (this.streams.length < this.slots) this.streams.push(fresh);
    else {
      let oldest = 0;
      for (let i = 1; i < this.streams.length; i++) if (this.streams[i].lastUse < this.streams[oldest].lastUse) oldest = i;
      this.streams[oldest] = fresh;
    }
    return undefined;
  }
}
