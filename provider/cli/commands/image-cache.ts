import type { CacheListing } from "../../library/image-cache";
import { imageSourceFor } from "../../library/images";
import { arg, type Context } from "../context";
import { table } from "../output";
import { progressBar } from "../progress";

// kindling image cache list | warm REF | pin KEY | unpin KEY | prune: the content-keyed image
// cache of a backend (--backend), all its pools or one (--pool). KEY is an entry's sha256 (or
// sha512), or 8 or more of its first hex digits.

const sizeText = (bytes: number) => (bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(1)} GiB` : `${(bytes / 1024 ** 2).toFixed(1)} MiB`);

function rows(entries: CacheListing[]): string {
  return table(
    ["KEY", "POOL", "STATE", "IMAGE", "VOLUME GiB", "USES", "LAST USED", "PINNED", "IN USE", "FROM"],
    entries.map((e) => [e.key.slice(0, 16), e.pool, e.state, sizeText(e.sizeBytes), e.sizeGiB, e.uses, e.lastUsedAt, e.pinned ? "yes" : "", e.inUse ? (e.dependents ? `${e.dependents} clone(s)` : "cloning") : "", e.from]),
  );
}

export async function imageCacheList(ctx: Context): Promise<void> {
  const backend = ctx.backend();
  const entries = await backend.imageCache.list({ pool: ctx.values.pool });
  const note = backend.imageCache.enabled ? "" : "\n(the configuration has no imageCache: new volumes do not use these entries)";
  ctx.out.result(entries, () => (entries.length ? rows(entries) : `the image cache of ${backend.name} is empty`) + note);
}

/** Caches an image now (one download), so the first volume made from it is a clone too. */
export async function imageCacheWarm(ctx: Context): Promise<void> {
  const backend = ctx.backend();
  const v = ctx.values;
  const source = await imageSourceFor(arg(ctx, 0, "REF"), ctx.images(), { sha256: v.sha256, sha512: v.sha512 }, "REF");
  const bar = progressBar("caching the image");
  let entry: CacheListing;
  try {
    entry = await backend.imageCache.warm(source, { pool: v.pool, pin: v.pin, onProgress: bar.onProgress });
  } finally {
    bar.done();
  }
  ctx.out.result(entry, () => `cached ${entry.from} in pool ${entry.pool} of ${backend.name}: key ${entry.key}${entry.pinned ? ", pinned" : ""}`);
}

export async function imageCachePin(ctx: Context): Promise<void> {
  const entry = await ctx.backend().imageCache.pin(arg(ctx, 0, "KEY"), { pool: ctx.values.pool });
  ctx.out.result(entry, () => `pinned ${entry.key} (${entry.from}) in pool ${entry.pool}: it is never evicted`);
}

export async function imageCacheUnpin(ctx: Context): Promise<void> {
  const entry = await ctx.backend().imageCache.unpin(arg(ctx, 0, "KEY"), { pool: ctx.values.pool });
  ctx.out.result(entry, () => `unpinned ${entry.key} (${entry.from}) in pool ${entry.pool}`);
}

/** Enforces the limits now; --all evicts every entry neither pinned nor in use. */
export async function imageCachePrune(ctx: Context): Promise<void> {
  const gone = await ctx.backend().imageCache.prune({ pool: ctx.values.pool, all: ctx.values.all });
  ctx.out.result(gone, () => (gone.length ? `evicted ${gone.length} entr${gone.length === 1 ? "y" : "ies"}:\n${rows(gone)}` : "nothing to evict"));
}
