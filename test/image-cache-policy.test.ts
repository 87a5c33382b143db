// The image cache's policy, which needs no backend: which entries hold which bytes (a naming
// digest must match and none may contradict; an md5 alone never names bytes), and which go
// under the limits (least recently used first, never pinned, in use or being filled ones).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { holdsBytes, namedBy, type CacheEntry } from "../provider/images/cache/entry";
import { planEviction, type Candidate } from "../provider/images/cache/eviction";
import type { Digest } from "../provider/images/digest";

const hex = (c: string, n: number) => c.repeat(n);
const entry = (name: string, over: Partial<CacheEntry> = {}): CacheEntry => ({
  backend: "b", pool: "p", conversion: "raw", by: `sha256:${hex(name, 64)}`, state: "ready",
  volume: { id: `id-${name}`, sizeGiB: 1 }, sizeBytes: 1, digests: { sha256: hex(name, 64), sha512: hex(name, 128), md5: hex(name, 32) },
  from: name, createdAt: "2026-01-01T00:00:00.000Z", lastUsedAt: "2026-01-01T00:00:00.000Z", uses: 1, pinned: false, clones: [], ...over,
});
const at = (minute: number) => `2026-01-01T00:${String(minute).padStart(2, "0")}:00.000Z`;
const candidate = (name: string, minute: number, over: Partial<CacheEntry> = {}, inUse = false): Candidate => ({ key: name, entry: entry(name, { lastUsedAt: at(minute), ...over }), inUse });
const NOW = Date.parse("2026-01-01T01:00:00.000Z");
const names = (c: Candidate[]) => c.map((x) => x.key);

describe("which entry holds an image's bytes", () => {
  const d = (algo: Digest["algo"], value: string): Digest => ({ algo, value, from: "test" });
  const a = entry("a");

  test("any naming digest the entry knows finds it: sha512 from Glance, sha256 from a URL", () => {
    assert.ok(holdsBytes(a, [d("sha512", hex("a", 128)), d("md5", hex("a", 32))], "raw"));
    assert.ok(holdsBytes(a, [d("sha256", hex("a", 64))], "raw"));
  });

  test("an md5 alone never names bytes, and a digest that contradicts the entry's is no match", () => {
    assert.ok(!holdsBytes(a, [d("md5", hex("a", 32))], "raw"));
    assert.ok(!holdsBytes(a, [d("sha256", hex("a", 64)), d("md5", hex("b", 32))], "raw"));
    assert.ok(!holdsBytes(a, [d("sha256", hex("b", 64))], "raw"));
  });

  test("a key is a digest or 8 or more of its first hex digits", () => {
    assert.ok(namedBy(a, hex("a", 8)));
    assert.ok(namedBy(a, `sha256:${hex("a", 64)}`));
    assert.ok(!namedBy(a, hex("a", 7)));
    assert.ok(!namedBy(a, "not-hex-at-all"));
  });
});

describe("eviction", () => {
  test("least recently used first, until the new entry fits maxSizeGiB", () => {
    const all = [candidate("c", 30), candidate("a", 10), candidate("b", 20)];
    const plan = planEviction(all, { maxSizeGiB: 3 }, { now: NOW, incomingGiB: 2 });
    assert.deepEqual(names(plan.evict), ["a", "b"]);
    assert.equal(plan.fits, true);
  });

  test("pinned entries, entries in use and entries being filled stay; the fit is then false", () => {
    const all = [candidate("a", 10, { pinned: true }), candidate("b", 20, {}, true), candidate("c", 30, { state: "filling" }), candidate("d", 40)];
    const plan = planEviction(all, { maxSizeGiB: 3 }, { now: NOW, incomingGiB: 1 });
    assert.deepEqual(names(plan.evict), ["d"]);
    assert.equal(plan.fits, false);
  });

  test("maxCount counts entries; an image larger than the whole cache evicts nothing for it", () => {
    assert.deepEqual(names(planEviction([candidate("a", 1), candidate("b", 2)], { maxCount: 2 }, { now: NOW, incomingGiB: 1 }).evict), ["a"]);
    const huge = planEviction([candidate("a", 1)], { maxSizeGiB: 10 }, { now: NOW, incomingGiB: 11 });
    assert.deepEqual(huge, { evict: [], fits: false });
  });

  test("maxAgeDays takes entries unused that long, pinned ones excepted; all takes every one it may", () => {
    const old = { lastUsedAt: "2025-12-01T00:00:00.000Z" };
    const all = [candidate("old", 0, old), candidate("pinned-old", 0, { ...old, pinned: true }), candidate("new", 59)];
    assert.deepEqual(names(planEviction(all, { maxAgeDays: 30 }, { now: NOW }).evict), ["old"]);
    assert.deepEqual(names(planEviction(all, {}, { now: NOW, all: true }).evict).sort(), ["new", "old"]);
  });
});
