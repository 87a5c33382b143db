import { randomBytes } from "node:crypto";
import { PreconditionFailed, type ObjectStore } from "./store";

/**
 * Whether the store refuses a second create of one key (If-None-Match: *): "exact" on S3
 * (radosgw, AWS) and on Swift's own API for creates that do not overlap in time; "none" where
 * the header is ignored (radosgw's Swift API overwrites). Writers need it: a commit that could
 * overwrite another would let two writers interleave.
 */
export type Fencing = "exact" | "none";

export async function probeConditionalCreate(store: ObjectStore): Promise<Fencing> {
  const key = `kindling/v1/probe/${randomBytes(8).toString("hex")}`;
  try {
    await store.put(key, Buffer.from("1"), { ifNoneMatch: true });
    try {
      await store.put(key, Buffer.from("2"), { ifNoneMatch: true });
      return "none";
    } catch (err) {
      if (err instanceof PreconditionFailed) return "exact";
      throw err;
    }
  } finally {
    await store.delete(key).catch(() => undefined);
  }
}
