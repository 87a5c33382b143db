import type { Lease } from "../../persistence/records";
import type { Digest, DigestAlgo } from "../digest";

// One entry of the image cache, as the records keep it (a key/value pair of the backend's
// store, so it is no volume record: `volume list` never shows it and no user command can
// delete its volume). It is keyed by content: the digest the fill was asked by and the
// conversion, never an image id; it knows every digest its bytes were verified with, so a
// Glance image (sha512) and a URL pinned by sha256 of the same bytes find the same entry.

/** What was done to the source's bytes to make the cached volume; today only "raw into a volume". */
export type Conversion = "raw";

export const ENTRY_PREFIX = "image-cache/";

/** Only these name bytes: an md5 can be forged to match other bytes, so it is checked, never looked up by. */
const STRONG: readonly DigestAlgo[] = ["sha256", "sha512"];

export type EntryState = "filling" | "ready" | "evicting";

export interface CacheEntry {
  backend: string;
  pool: string;
  conversion: Conversion;
  /** The digest the fill was asked by ("sha512:..."): the last part of the entry's key. */
  by: string;
  state: EntryState;
  /** The cached volume: an ordinary driver volume with no volume record. */
  volume: { id: string; sizeGiB: number; location?: string };
  /** The image's bytes (what the cached volume holds from byte 0). */
  sizeBytes: number;
  /** Every digest of those bytes, computed while they were written (the source's own were checked). */
  digests: Partial<Record<DigestAlgo, string>>;
  /** The format the inspector found. */
  format?: string;
  /** Where the bytes first came from, for people (a URL without query, SERVICE:ID, a path). */
  from: string;
  createdAt: string;
  lastUsedAt: string;
  /** Volumes made from it. */
  uses: number;
  pinned: boolean;
  /** Who fills or evicts it now. */
  holder?: Lease;
  /** Bytes written so far by the filler: its waiters see the fill move. */
  filledBytes?: number;
  /** Clones being made from it now, one lease each: it is in use while one is live. */
  clones: Lease[];
}

export function backendPrefix(backend: string): string {
  return `${ENTRY_PREFIX}${backend}/`;
}

export function poolPrefix(backend: string, pool: string): string {
  return `${backendPrefix(backend)}${pool}/`;
}

export function entryKey(backend: string, pool: string, conversion: Conversion, by: Digest): string {
  return `${poolPrefix(backend, pool)}${conversion}/${by.algo}:${by.value}`;
}

/** An entry from its stored value; undefined for anything that is not one (never trusted blindly). */
export function parseEntry(value: string): CacheEntry | undefined {
  try {
    const e = JSON.parse(value) as CacheEntry;
    if (typeof e !== "object" || e === null || typeof e.volume?.id !== "string" || !["filling", "ready", "evicting"].includes(e.state)) return undefined;
    return { ...e, clones: Array.isArray(e.clones) ? e.clones : [], digests: e.digests ?? {} };
  } catch {
    return undefined;
  }
}

/** The digests a source offers that can name its bytes, strongest first. */
export function namingDigests(expect: readonly Digest[]): Digest[] {
  return expect.filter((d) => STRONG.includes(d.algo)).sort((a, b) => STRONG.indexOf(b.algo) - STRONG.indexOf(a.algo));
}

/**
 * Whether the entry holds the bytes these digests describe: one naming digest (sha256,
 * sha512) equal to the entry's, and none of the others (an md5 too) saying otherwise.
 */
export function holdsBytes(entry: CacheEntry, expect: readonly Digest[], conversion: Conversion): boolean {
  if (entry.conversion !== conversion) return false;
  if (!namingDigests(expect).some((d) => entry.digests[d.algo] === d.value)) return false;
  return expect.every((d) => entry.digests[d.algo] === undefined || entry.digests[d.algo] === d.value);
}

/** How people name an entry: its sha256, shortened in tables. */
export function entryName(entry: CacheEntry, short = false): string {
  const name = entry.digests.sha256 ?? entry.by.replace(/^[a-z0-9]+:/, "");
  return short ? name.slice(0, 12) : name;
}

/** Whether `key` (a sha256 or sha512 digest, or a prefix of at least 8 hex digits, with or without "sha256:") names the entry. */
export function namedBy(entry: CacheEntry, key: string): boolean {
  const k = key.trim().toLowerCase().replace(/^(sha256|sha512):/, "");
  if (!/^[0-9a-f]{8,128}$/.test(k)) return false;
  return STRONG.some((algo) => entry.digests[algo]?.startsWith(k));
}
