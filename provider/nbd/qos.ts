import { setTimeout as sleep } from "node:timers/promises";

/**
 * QoS for one export: Cinder's front-end keys as token buckets (one second of burst).
 * read_* and write_* limit their direction; total_* limits both together.
 */
export class Limiter {
  private readonly buckets: Array<{ applies: (d: "read" | "write") => boolean; perSecond: number; unit: "ops" | "bytes"; tokens: number; at: number }> = [];

  constructor(specs: Record<string, string>) {
    const add = (key: string, applies: (d: "read" | "write") => boolean, unit: "ops" | "bytes") => {
      const value = Number(specs[key]);
      if (value > 0) this.buckets.push({ applies, perSecond: value, unit, tokens: value, at: Date.now() });
    };
    add("read_iops_sec", (d) => d === "read", "ops");
    add("write_iops_sec", (d) => d === "write", "ops");
    add("total_iops_sec", () => true, "ops");
    add("read_bytes_sec", (d) => d === "read", "bytes");
    add("write_bytes_sec", (d) => d === "write", "bytes");
    add("total_bytes_sec", () => true, "bytes");
  }

  get active(): boolean {
    return this.buckets.length > 0;
  }

  /** Waits until one operation of `bytes` may go ahead in direction `d`. */
  async take(direction: "read" | "write", bytes: number): Promise<void> {
    for (const bucket of this.buckets) {
      if (!bucket.applies(direction)) continue;
      const cost = bucket.unit === "ops" ? 1 : bytes;
      for (;;) {
        const now = Date.now();
        bucket.tokens = Math.min(bucket.perSecond, bucket.tokens + ((now - bucket.at) / 1000) * bucket.perSecond);
        bucket.at = now;
        // A request bigger than a whole second's budget goes through once the bucket is full,
        // then leaves it in debt, so large requests are slowed, not stuck.
        if (bucket.tokens >= Math.min(cost, bucket.perSecond)) {
          bucket.tokens -= cost;
          break;
        }
        await sleep(Math.max(1, ((Math.min(cost, bucket.perSecond) - bucket.tokens) / bucket.perSecond) * 1000));
      }
    }
  }
}
