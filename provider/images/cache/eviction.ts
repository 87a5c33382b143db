import type { CacheEntry } from "./entry";
import type { ImageCacheSettings } from "./settings";

// Which entries of one pool's cache go, and whether a new one fits: least recently used first,
// never a pinned one, never one in use (a clone being made from it, or clones that still share
// its data), never one being filled (its size counts all the same).

export interface Candidate {
  key: string;
  entry: CacheEntry;
  /** Clones are being made from it, or depend on it: it cannot go now. */
  inUse: boolean;
}

export interface EvictionPlan {
  /** In the order they should go. */
  evict: Candidate[];
  /** Whether an entry of `incomingGiB` fits once those are gone (always true without one). */
  fits: boolean;
}

const DAY_MS = 24 * 60 * 60 * 1000;

const evictable = (c: Candidate) => c.entry.state === "ready" && !c.entry.pinned && !c.inUse;

export function planEviction(candidates: readonly Candidate[], settings: ImageCacheSettings, opts: { now: number; incomingGiB?: number; all?: boolean }): EvictionPlan {
  const kept = candidates.filter((c) => c.entry.state !== "evicting");
  const evict: Candidate[] = [];
  const take = (c: Candidate) => {
    evict.push(c);
    kept.splice(kept.indexOf(c), 1);
  };
  for (const c of [...kept]) {
    const unused = opts.now - Date.parse(c.entry.lastUsedAt);
    const expired = settings.maxAgeDays !== undefined && Number.isFinite(unused) && unused > settings.maxAgeDays * DAY_MS;
    if (evictable(c) && (opts.all || expired)) take(c);
  }
  const incoming = opts.incomingGiB;
  // An image larger than the whole cache is not cached at all: emptying the cache would not help.
  if (incoming !== undefined && settings.maxSizeGiB !== undefined && incoming > settings.maxSizeGiB) return { evict, fits: false };
  const adding = incoming === undefined ? 0 : 1;
  const over = () =>
    (settings.maxSizeGiB !== undefined && kept.reduce((sum, c) => sum + c.entry.volume.sizeGiB, incoming ?? 0) > settings.maxSizeGiB) ||
    (settings.maxCount !== undefined && kept.length + adding > settings.maxCount);
  const lru = kept.filter(evictable).sort((a, b) => Date.parse(a.entry.lastUsedAt) - Date.parse(b.entry.lastUsedAt) || a.key.localeCompare(b.key));
  while (over() && lru.length) take(lru.shift() as Candidate);
  return { evict, fits: !over() };
}
