import { setTimeout as sleep } from "node:timers/promises";
import type { DriverVolume, Progress } from "../drivers/contract";
import type { Digest } from "../images/digest";
import { backendPrefix, holdsBytes, namedBy, namingDigests, parseEntry, poolPrefix, entryKey, entryName, type CacheEntry, type Conversion } from "../images/cache/entry";
import { planEviction, type Candidate } from "../images/cache/eviction";
import { imageCacheSettingsSchema, type ImageCacheSettings } from "../images/cache/settings";
import type { ImageSource, SourceDescription } from "../images/sources/source";
import type { ImageProvenance, Lease } from "../persistence/records";
import { provenanceOf } from "../images/provenance";
import { ConflictError, InvalidInputError, NotFoundError, errorMessage } from "../util/errors";
import { newId, now } from "../util/ids";
import { logger } from "../util/log";
import { describeProcess } from "../util/owner";
import { parseInput } from "../util/validate";
import { GiB } from "../util/sizes";
import { dropLease, leaseState, newLease } from "./lease";
// The fill (the image pipeline) is loaded on the first miss, not with every backend.
const cacheFill = () => require("./image-cache-fill") as typeof import("./image-cache-fill");
import { createVolumeSchema, type CreateVolumeFromImageOptions } from "./schemas";
import { Volume } from "./volume";
import type { Backend } from "./backend";

// The content-keyed image cache of one backend: per pool, a cached volume for each image's
// bytes (an ordinary driver volume that has no volume record: it is not a user's volume, no user
// command can delete it), and an entry for it in the backend's key/value records. A new volume
// from a cached image is a clone of the cached volume (a reflink on files, an rbd clone), so a
// hit costs the same for 1 GiB and 100 GiB. Entries change only by compare-and-set; a fill, an
// eviction and each clone in progress hold a lease in the entry, so among all processes sharing
// the records one download fills an entry while the others wait, and nothing in use is evicted.

const CONVERSION: Conversion = "raw";
/** How often a waiter looks at the entry another process fills. */
const POLL_MS = 200;
/** Entries waiting to be retried after a compare-and-set lost a race: a bound, never reached in practice. */
const MAX_RACES = 1000;

/** An entry as `list` shows it. */
export interface CacheListing {
  /** Its sha256: what `pin`, `unpin` take (a prefix of 8 or more digits will do). */
  key: string;
  pool: string;
  state: CacheEntry["state"];
  sizeGiB: number;
  sizeBytes: number;
  digests: CacheEntry["digests"];
  format?: string;
  from: string;
  createdAt: string;
  lastUsedAt: string;
  uses: number;
  pinned: boolean;
  /** Clones being made now, and volumes whose data depends on the cached volume (rbd clones). */
  inUse: boolean;
  dependents: number;
  /** The cached volume's id (the driver's name for it: `volume-<id>`, `pool/volume-<id>`). */
  volumeId: string;
  by?: string;
}

export interface ObtainOptions {
  pool?: string;
  onProgress?: (p: Progress) => void;
}

interface Stored {
  key: string;
  value: string;
  entry: CacheEntry;
}

/** What `obtain` found or made: a ready entry, with the lease of a clone claim when one was asked for. */
interface Obtained {
  key: string;
  entry: CacheEntry;
  description?: SourceDescription;
  claim?: Lease;
  hit: boolean;
}

/**
 * What a volume cloned from a cached image records of it: the source as this caller named it
 * (its description when it was read, else what the source knows offline: a pinned digest's
 * hit asks nobody), and the digests the entry's bytes were computed with when it was filled.
 */
function cachedProvenance(entry: CacheEntry, description: SourceDescription | undefined, source: ImageSource): ImageProvenance {
  const offline: SourceDescription = { expect: [], rangeable: false, where: entry.from, origin: source.origin?.() ?? { kind: "url", location: entry.from } };
  const made = provenanceOf(description ?? offline, { format: entry.format ?? "raw", sizeBytes: entry.sizeBytes, virtualSizeBytes: entry.sizeBytes });
  return { ...made, digests: { ...made.digests, ...entry.digests } };
}

export class ImageCache {
  /** Undefined when the configuration has no `imageCache`: volumes from images are then never cached. */
  readonly settings: ImageCacheSettings | undefined;

  constructor(
    private readonly backend: Backend,
    settings: ImageCacheSettings | undefined,
  ) {
    this.settings = settings === undefined ? undefined : parseInput(imageCacheSettingsSchema, settings, "imageCache");
  }

  get enabled(): boolean {
    return this.settings !== undefined;
  }

  private get limits(): ImageCacheSettings {
    return this.settings ?? {};
  }

  private get store() {
    return this.backend.persistence;
  }

  // ---- records

  private async read(key: string): Promise<Stored | undefined> {
    const [kv] = await this.store.getKeyValues(key);
    const entry = kv && parseEntry(kv.value);
    return entry ? { key, value: kv.value, entry } : undefined;
  }

  private async stored(pool?: string): Promise<Stored[]> {
    const prefix = pool === undefined ? backendPrefix(this.backend.name) : poolPrefix(this.backend.name, pool);
    const out: Stored[] = [];
    for (const kv of await this.store.getKeyValues()) {
      if (!kv.key.startsWith(prefix)) continue;
      const entry = parseEntry(kv.value);
      if (entry && entry.backend === this.backend.name) out.push({ key: kv.key, value: kv.value, entry });
    }
    return out;
  }

  /**
   * Changes an entry by compare-and-set: `next` sees it as stored now and returns what it
   * becomes (undefined: removed), or `same` to leave it. Tried again while others change it.
   */
  private async change(key: string, next: (e: CacheEntry | undefined) => CacheEntry | undefined | typeof SAME): Promise<{ changed: boolean; entry?: CacheEntry }> {
    for (let race = 0; race < MAX_RACES; race++) {
      const current = await this.read(key);
      const wanted = next(current?.entry);
      if (wanted === SAME) return { changed: false, entry: current?.entry };
      const value = wanted === undefined ? undefined : JSON.stringify(wanted);
      if (await this.backend.writeRecord(() => this.store.compareAndSetKeyValue(key, current?.value, value), { freeing: wanted === undefined })) return { changed: true, entry: wanted };
    }
    throw new ConflictError(`the image cache entry ${key} kept changing under this process`);
  }

  /** Renews the heartbeat of a lease held in the entry (its holder's or a clone's) until stopped. */
  private keepAlive(key: string, lease: Lease, extra?: () => Partial<CacheEntry>): () => void {
    const renew = (e: CacheEntry | undefined): CacheEntry | typeof SAME => {
      if (!e) return SAME;
      const beat = (l: Lease) => (l.token === lease.token ? { ...l, heartbeat: now() } : l);
      if (e.holder?.token === lease.token) return { ...e, holder: beat(e.holder), ...extra?.() };
      if (e.clones.some((c) => c.token === lease.token)) return { ...e, clones: e.clones.map(beat) };
      return SAME;
    };
    const timer = setInterval(() => {
      this.change(key, renew).catch((err) => logger().warn({ entry: key, err: errorMessage(err) }, "could not renew an image cache lease"));
    }, this.backend.leaseSettings.heartbeatMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  private live(lease: Lease | undefined): boolean {
    return lease !== undefined && leaseState(lease, this.backend.leaseSettings.staleMs) === "live";
  }

  // ---- the hook of backend.createVolumeFromImage

  /**
   * A new volume from a cached image: a clone of the cached volume, filled first when the
   * image is not cached yet. Undefined when the cache is off or does not take this image (no
   * sha256 or sha512 names its bytes, extra specs ask for what a clone may not give, it is
   * larger than the cache may hold): the caller then copies the image itself.
   */
  async createVolume(source: ImageSource, options: CreateVolumeFromImageOptions, opts: { onProgress?: (p: Progress) => void } = {}): Promise<Volume | undefined> {
    if (!this.enabled) return undefined;
    const { allowUnverified: _allowed, sizeGiB, ...rest } = options;
    // Every other field is checked before the source is read at all, as without the cache.
    parseInput(createVolumeSchema, { ...rest, sizeGiB: sizeGiB ?? 1 });
    // Extra specs shape how the storage lays a volume out (preallocation, rbd features): a
    // clone of the cached volume might not honour them, so such a volume is copied as before.
    if (rest.extraSpecs && Object.keys(rest.extraSpecs).length) return undefined;
    const got = await this.obtain(source, { pool: rest.pool, onProgress: opts.onProgress }, { claim: true, sizeGiB });
    if (!got) return undefined;
    const claim = got.claim as Lease;
    const stop = this.keepAlive(got.key, claim);
    try {
      const needed = refuseTooSmall(sizeGiB, got.entry.sizeBytes, got.description);
      const input = parseInput(createVolumeSchema, { ...rest, pool: got.entry.pool, sizeGiB: sizeGiB ?? needed });
      const volume = await this.cloneInto(got.entry, input, opts, cachedProvenance(got.entry, got.description, source));
      logger().info({ event: got.hit ? "image.cache.hit" : "image.cache.miss", backend: this.backend.name, pool: got.entry.pool, entry: entryName(got.entry), volume: volume.id }, got.hit ? "a volume from a cached image" : "a volume from a newly cached image");
      return volume;
    } finally {
      stop();
      await this.release(got.key, claim);
    }
  }

  /** The new volume, recorded as the backend records any, made by the driver's clone of the cached volume (grown to the size asked). */
  private async cloneInto(entry: CacheEntry, input: ReturnType<typeof createVolumeSchema.parse>, opts: { onProgress?: (p: Progress) => void }, image: ImageProvenance): Promise<Volume> {
    // A clone's source: drivers whose clones share its data (rbd) clean up after the clone by it.
    const record = await this.backend.newVolumeRecord(input, { sourceVolumeId: entry.volume.id, image });
    const id = record.id;
    const progress = this.backend.progressFor("create", id, opts.onProgress);
    return Volume.build(this.backend, record, (v) => this.backend.driver.cloneVolume(v, cachedVolume(entry), progress));
  }

  private async release(key: string, claim: Lease): Promise<void> {
    dropLease(claim);
    await this.change(key, (e) => (e && e.clones.some((c) => c.token === claim.token) ? { ...e, clones: e.clones.filter((c) => c.token !== claim.token) } : SAME))
      .catch((err) => logger().warn({ entry: key, err: errorMessage(err) }, "could not give back an image cache clone lease; it ends with this process"));
  }

  // ---- finding and filling entries

  /**
   * The ready entry holding the source's bytes in the pool, filled now when there is none
   * (one filler among all processes: the others wait for it). With `claim`, the entry comes
   * with a clone lease in it, so it cannot be evicted before the caller gives that back.
   * `sizeGiB`: the size the caller will ask for, refused before any download when too small.
   */
  private async obtain(source: ImageSource, o: ObtainOptions, how: { claim: boolean; sizeGiB?: number; required?: boolean }): Promise<Obtained | undefined> {
    await this.backend.ready();
    const pool = o.pool ?? this.backend.driver.defaultPool();
    // An unknown pool, or a size it can never hold, is refused before anything is read.
    await this.backend.checkPlacement(pool, how.sizeGiB ?? 1);
    // A digest the user pinned names the bytes with no need to ask anyone: no network at all.
    const pinned = namingDigests(source.pinnedDigests?.() ?? []);
    if (pinned.length) {
      const hit = await this.readyMatch(pool, source.pinnedDigests?.() ?? [], how);
      if (hit) return hit;
    }
    const description = await source.describe();
    const naming = namingDigests(description.expect);
    const skip = (why: string) => {
      if (how.required) throw new InvalidInputError("image", `${description.where} cannot be cached: ${why}`);
      logger().info({ event: "image.cache.skip", backend: this.backend.name, pool, where: description.where, why }, "not using the image cache");
      return undefined;
    };
    if (!naming.length) return skip("no sha256 or sha512 names its bytes (give one with --sha256 or --sha512)");
    if (description.sizeBytes === undefined) return skip("its size is not known before it is read");
    // Refused before any download, as without the cache.
    refuseTooSmall(how.sizeGiB, description.sizeBytes, description);
    const key = entryKey(this.backend.name, pool, CONVERSION, naming[0]);
    let waited = false;
    // Waiting goes on while the other process's fill moves; `waitMs` without a move ends it.
    let mark = "";
    let markedAt = 0;
    for (;;) {
      const hit = await this.readyMatch(pool, description.expect, how);
      if (hit) return { ...hit, description, hit: !waited };
      const current = await this.read(key);
      if (!current) {
        const lease = newLease("fill");
        const entry = newEntry(this.backend.name, pool, naming[0], description, lease);
        const { changed } = await this.change(key, (e) => (e ? SAME : entry));
        if (!changed) {
          dropLease(lease);
          continue;
        }
        const filled = await this.fillEntry(key, entry, source, description, o.onProgress, how.required === true);
        if (!filled) return undefined;
        if (!how.claim) return { key, entry: filled, description, hit: false };
        // Claimed by a compare-and-set of its own, as any other process claims it.
        const claimed = await this.claimIn({ key, entry: filled }, description.expect);
        if (claimed) return { key, entry: claimed.entry, description, claim: claimed.lease, hit: false };
        continue;
      }
      const { entry } = current;
      if (entry.state === "ready") {
        // Keyed by this digest but holding other bytes: only a store edited by hand leaves that.
        if (!holdsBytes(entry, description.expect, CONVERSION)) {
          throw new ConflictError(`the image cache entry ${key} does not hold the bytes its key names`, { hint: "remove it with `kindling image cache prune --all`" });
        }
        continue; // readyMatch takes it on the next turn
      }
      if (!this.live(entry.holder)) {
        await this.clearAbandoned(current);
        continue;
      }
      const seen = JSON.stringify([entry.state, entry.filledBytes, entry.holder?.token]);
      if (!waited) {
        waited = true;
        logger().info({ event: "image.cache.wait", backend: this.backend.name, pool, entry: key, state: entry.state, holder: entry.holder ? describeProcess(entry.holder.owner) : undefined }, "waiting for another process's work on the image cache entry");
      }
      if (seen !== mark) {
        mark = seen;
        markedAt = Date.now();
      } else if (Date.now() - markedAt > this.backend.leaseSettings.waitMs) {
        throw new ConflictError(`the image cache entry for ${description.where} has been ${entry.state} by ${entry.holder ? describeProcess(entry.holder.owner) : "another process"} without progress for ${Math.round(this.backend.leaseSettings.waitMs / 1000)} s`, { hint: "try again later" });
      }
      await sleep(POLL_MS);
    }
  }

  /** A ready entry of the pool holding bytes with these digests, claimed for a clone when asked. */
  private async readyMatch(pool: string, expect: readonly Digest[], how: { claim: boolean }): Promise<Obtained | undefined> {
    for (const s of await this.stored(pool)) {
      if (s.entry.state !== "ready" || !holdsBytes(s.entry, expect, CONVERSION)) continue;
      if (!how.claim) return { key: s.key, entry: s.entry, hit: true };
      const claimed = await this.claimIn(s, expect);
      if (claimed) return { key: s.key, entry: claimed.entry, claim: claimed.lease, hit: true };
    }
    return undefined;
  }

  /** Adds a clone lease to a ready entry (and marks it used); undefined when it is no longer ready. */
  private async claimIn(s: { key: string; entry: CacheEntry }, expect: readonly Digest[]): Promise<{ entry: CacheEntry; lease: Lease } | undefined> {
    const lease = newLease("clone");
    const { changed, entry } = await this.change(s.key, (e) => {
      if (!e || e.state !== "ready" || !holdsBytes(e, expect, CONVERSION)) return SAME;
      // Leases of clones whose process died go now: they hold nothing any more.
      return { ...e, clones: [...e.clones.filter((c) => this.live(c)), lease], lastUsedAt: now(), uses: e.uses + 1 };
    });
    if (changed && entry) return { entry, lease };
    dropLease(lease);
    return undefined;
  }

  /**
   * Fills a new entry this process holds: room is made first (least recently used entries
   * go), then the cached volume is made and the image written into it, every digest computed
   * on the way. Any failure takes the volume and the entry back. Undefined (entry gone) when
   * the image does not fit the cache's limits.
   */
  private async fillEntry(key: string, entry: CacheEntry, source: ImageSource, description: SourceDescription, onProgress: ((p: Progress) => void) | undefined, required: boolean): Promise<CacheEntry | undefined> {
    const lease = entry.holder as Lease;
    let filled = 0;
    const stop = this.keepAlive(key, lease, () => ({ filledBytes: filled }));
    const volume = cachedVolume(entry);
    let made = false;
    try {
      await this.backend.checkPlacement(entry.pool, volume.sizeGiB);
      const room = await this.makeRoom(entry.pool, volume.sizeGiB, key);
      if (!room) {
        const why = `it needs ${volume.sizeGiB} GiB and the cache's limits (${limitsText(this.limits)}) leave no room beside pinned entries and entries in use`;
        if (required) throw new InvalidInputError("image", `${description.where} cannot be cached: ${why}`);
        logger().info({ event: "image.cache.skip", backend: this.backend.name, pool: entry.pool, where: description.where, why }, "not using the image cache");
        await this.change(key, (e) => (e?.holder?.token === lease.token ? undefined : SAME));
        return undefined;
      }
      const result = await cacheFill().fillFromImage(this.backend.driver, volume, source, description, {
        onStart: (location, sizeGiB) => {
          made = true;
          volume.location = location ?? volume.location;
          volume.sizeGiB = sizeGiB;
        },
        onProgress: (p) => {
          filled = p.done;
          onProgress?.(p);
        },
      });
      const { changed, entry: ready } = await this.change(key, (e) =>
        e?.holder?.token !== lease.token ? SAME : { ...e, state: "ready", holder: undefined, filledBytes: undefined, volume: { ...e.volume, location: volume.location, sizeGiB: volume.sizeGiB }, sizeBytes: result.sizeBytes, digests: result.digests, format: result.format, lastUsedAt: now() });
      if (!changed || !ready) throw new ConflictError(`the image cache entry ${key} was taken over while this process filled it`);
      logger().info({ event: "image.cache.fill", backend: this.backend.name, pool: entry.pool, entry: entryName(ready), bytes: entry.sizeBytes }, "cached an image");
      return ready;
    } catch (err) {
      if (made) await this.backend.driver.deleteVolume(volume).catch((cleanup: Error) => logger().warn({ volume: volume.id, err: cleanup.message }, "could not delete the cached volume of a failed fill"));
      await this.change(key, (e) => (e?.holder?.token === lease.token ? undefined : SAME)).catch(() => undefined);
      throw err;
    } finally {
      stop();
      dropLease(lease);
    }
  }

  /** An entry whose filler or evictor died: its volume and the entry go, whatever state they were in. */
  private async clearAbandoned(s: Stored): Promise<void> {
    const lease = newLease("clear");
    try {
      const { changed } = await this.change(s.key, (e) => (e && e.state !== "ready" && !this.live(e.holder) ? { ...e, state: "evicting", holder: lease } : SAME));
      if (!changed) return;
      logger().info({ event: "image.cache.clear", backend: this.backend.name, entry: s.key, was: s.entry.state }, "removing what a process that died left of an image cache entry");
      await this.backend.driver.deleteVolume(cachedVolume(s.entry));
      await this.change(s.key, (e) => (e?.holder?.token === lease.token ? undefined : SAME));
    } finally {
      dropLease(lease);
    }
  }

  // ---- eviction

  /** Entries of the pool as eviction sees them: in use when a clone is being made or volumes depend on the cached one. */
  private async candidates(pool?: string): Promise<Array<Candidate & { value: string; dependents: number }>> {
    const entries = await this.stored(pool);
    const dependents = await this.dependents();
    return entries.map((s) => {
      const count = dependents.get(s.entry.volume.id) ?? 0;
      return { ...s, dependents: count, inUse: count > 0 || s.entry.clones.some((c) => this.live(c)) };
    });
  }

  /**
   * Volumes whose data still depends on a cached volume, by its id: clones on drivers whose
   * clones share their source's data (rbd, object); none where clones are copies (files).
   */
  private async dependents(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    if (this.backend.driver.independentClones) return out;
    for (const r of await this.store.getVolumes({ backend: this.backend.name })) {
      if (!r.sourceVolumeId || r.status === "deleted") continue;
      out.set(r.sourceVolumeId, (out.get(r.sourceVolumeId) ?? 0) + 1);
    }
    return out;
  }

  /** Evicts what the limits say must go to fit `incomingGiB` more; false when it still would not fit. */
  private async makeRoom(pool: string, incomingGiB: number, except: string): Promise<boolean> {
    const all = (await this.candidates(pool)).filter((c) => c.key !== except);
    const plan = planEviction(all, this.limits, { now: Date.now(), incomingGiB });
    if (!plan.fits) return false;
    for (const c of plan.evict) {
      // One used or claimed meanwhile stays; the fill then goes ahead over the limit rather than fail a user's create.
      await this.evict(c as Candidate & { value: string });
    }
    return true;
  }

  /** Evicts one entry if it is still exactly as judged (not used, claimed or pinned since); says whether it went. */
  private async evict(c: Candidate & { value: string }): Promise<boolean> {
    const lease = newLease("evict");
    try {
      const evicting = { ...c.entry, state: "evicting" as const, holder: lease };
      const swapped = await this.backend.writeRecord(() => this.store.compareAndSetKeyValue(c.key, c.value, JSON.stringify(evicting)));
      if (!swapped) return false;
      try {
        await this.backend.driver.deleteVolume(cachedVolume(c.entry));
      } catch (err) {
        // Refused (clones the records do not know of): the entry stays, usable as before.
        await this.change(c.key, (e) => (e?.holder?.token === lease.token ? { ...e, state: "ready", holder: undefined } : SAME));
        logger().warn({ entry: c.key, err: errorMessage(err) }, "could not evict an image cache entry");
        return false;
      }
      await this.change(c.key, (e) => (e?.holder?.token === lease.token ? undefined : SAME));
      logger().info({ event: "image.cache.evict", backend: this.backend.name, pool: c.entry.pool, entry: entryName(c.entry), sizeGiB: c.entry.volume.sizeGiB }, "evicted an image cache entry");
      return true;
    } finally {
      dropLease(lease);
    }
  }

  // ---- what the command and programs call

  /** Every entry of the backend (or of one pool), least recently used first. */
  async list(opts: { pool?: string } = {}): Promise<CacheListing[]> {
    await this.backend.ready();
    const found = await this.candidates(opts.pool);
    return found
      .sort((a, b) => Date.parse(a.entry.lastUsedAt) - Date.parse(b.entry.lastUsedAt) || a.key.localeCompare(b.key))
      .map((c) => listing(c.entry, c.inUse, c.dependents));
  }

  /** The ready entry holding the source's bytes, without filling one (a pinned digest needs no network). */
  async lookup(source: ImageSource, opts: { pool?: string } = {}): Promise<CacheListing | undefined> {
    await this.backend.ready();
    const pool = opts.pool ?? this.backend.driver.defaultPool();
    const pinned = source.pinnedDigests?.() ?? [];
    const expect = namingDigests(pinned).length ? pinned : (await source.describe()).expect;
    if (!namingDigests(expect).length) return undefined;
    const found = (await this.candidates(pool)).find((c) => c.entry.state === "ready" && holdsBytes(c.entry, expect, CONVERSION));
    return found && listing(found.entry, found.inUse, found.dependents);
  }

  /** Caches the source's bytes in the pool now (one download, as for a volume), optionally pinned. */
  async warm(source: ImageSource, opts: ObtainOptions & { pin?: boolean } = {}): Promise<CacheListing> {
    const got = (await this.obtain(source, opts, { claim: false, required: true })) as Obtained;
    // Warming what is cached already counts as a use: it is wanted, so it goes last.
    if (got.hit) await this.change(got.key, (e) => (e?.state === "ready" ? { ...e, lastUsedAt: now() } : SAME));
    if (opts.pin) await this.setPinned(got.key, true);
    const listed = (await this.candidates(got.entry.pool)).find((c) => c.key === got.key);
    if (!listed) throw new NotFoundError("image cache entry", entryName(got.entry), { hint: "it was evicted at once; raise the cache's limits" });
    return listing(listed.entry, listed.inUse, listed.dependents);
  }

  /** Pinned entries are never evicted, by limits or by `prune --all`. */
  async pin(key: string, opts: { pool?: string } = {}): Promise<CacheListing> {
    return this.setPinnedByName(key, true, opts.pool);
  }

  async unpin(key: string, opts: { pool?: string } = {}): Promise<CacheListing> {
    return this.setPinnedByName(key, false, opts.pool);
  }

  private async setPinnedByName(name: string, pinned: boolean, pool?: string): Promise<CacheListing> {
    await this.backend.ready();
    const found = (await this.stored(pool)).filter((s) => s.entry.state === "ready" && namedBy(s.entry, name));
    if (!found.length) throw new NotFoundError("image cache entry", name, { field: "KEY", hint: `list them with \`kindling image cache list --backend ${this.backend.name}\`` });
    if (found.length > 1) {
      throw new ConflictError(`${found.length} image cache entries match ${JSON.stringify(name)}: ${found.map((s) => `${entryName(s.entry)} in pool ${s.entry.pool}`).join(", ")}`, { field: "KEY", hint: "give more of the digest, or --pool" });
    }
    await this.setPinned(found[0].key, pinned);
    const listed = (await this.candidates(found[0].entry.pool)).find((c) => c.key === found[0].key);
    if (!listed) throw new NotFoundError("image cache entry", name, { field: "KEY" });
    return listing(listed.entry, listed.inUse, listed.dependents);
  }

  private async setPinned(key: string, pinned: boolean): Promise<void> {
    const { entry } = await this.change(key, (e) => (e && e.state === "ready" && e.pinned !== pinned ? { ...e, pinned } : SAME));
    if (!entry) throw new NotFoundError("image cache entry", key);
  }

  /**
   * Enforces the limits now (age, count, size), and with `all` evicts every entry that is
   * neither pinned nor in use; what dead processes left half made goes too. Says what went.
   */
  async prune(opts: { pool?: string; all?: boolean } = {}): Promise<CacheListing[]> {
    await this.backend.ready();
    for (const s of await this.stored(opts.pool)) {
      if (s.entry.state !== "ready" && !this.live(s.entry.holder)) await this.clearAbandoned(s);
    }
    const gone: CacheListing[] = [];
    const pools = opts.pool === undefined ? this.backend.driver.poolNames() : [opts.pool];
    for (const pool of pools) {
      const plan = planEviction(await this.candidates(pool), this.limits, { now: Date.now(), all: opts.all });
      for (const c of plan.evict) if (await this.evict(c as Candidate & { value: string })) gone.push(listing(c.entry, false, 0));
    }
    return gone;
  }
}

const SAME = Symbol("same");

/** The size a new volume of the image needs; throws naming it when `sizeGiB` is smaller. */
function refuseTooSmall(sizeGiB: number | undefined, sizeBytes: number, description?: SourceDescription): number {
  const needed = neededGiB(sizeBytes, description);
  if (sizeGiB !== undefined && sizeGiB < needed) {
    const minDisk = description?.minDiskGiB ?? 0;
    throw new InvalidInputError("sizeGiB", `the image needs at least ${needed} GiB (${sizeBytes} bytes${minDisk ? `, min_disk ${minDisk} GiB` : ""}), more than ${sizeGiB}`);
  }
  return needed;
}

/** What a new volume of the image needs: its bytes, at least 1 GiB, and the service's min_disk. */
function neededGiB(sizeBytes: number, description?: SourceDescription): number {
  return Math.max(1, Math.ceil(sizeBytes / GiB), description?.minDiskGiB ?? 0);
}

function newEntry(backend: string, pool: string, by: Digest, description: SourceDescription, holder: Lease): CacheEntry {
  const at = now();
  return {
    backend, pool, conversion: CONVERSION, by: `${by.algo}:${by.value}`, state: "filling",
    // The cached volume holds the image and no more: clones grow to what each user asks.
    volume: { id: newId(), sizeGiB: Math.max(1, Math.ceil((description.sizeBytes as number) / GiB)) },
    sizeBytes: description.sizeBytes as number, digests: {}, from: description.where,
    createdAt: at, lastUsedAt: at, uses: 0, pinned: false, holder, filledBytes: 0, clones: [],
  };
}

function cachedVolume(entry: CacheEntry): DriverVolume {
  return { id: entry.volume.id, pool: entry.pool, sizeGiB: entry.volume.sizeGiB, extraSpecs: {}, qosSpecs: {}, location: entry.volume.location };
}

function listing(e: CacheEntry, inUse: boolean, dependents: number): CacheListing {
  return {
    key: entryName(e), pool: e.pool, state: e.state, sizeGiB: e.volume.sizeGiB, sizeBytes: e.sizeBytes, digests: e.digests, format: e.format,
    from: e.from, createdAt: e.createdAt, lastUsedAt: e.lastUsedAt, uses: e.uses, pinned: e.pinned, inUse, dependents, volumeId: e.volume.id,
    ...(e.state === "ready" ? {} : { by: e.by }),
  };
}

function limitsText(l: ImageCacheSettings): string {
  const parts = [l.maxSizeGiB !== undefined ? `maxSizeGiB ${l.maxSizeGiB}` : "", l.maxCount !== undefined ? `maxCount ${l.maxCount}` : ""].filter(Boolean);
  return parts.join(", ") || "none";
}
