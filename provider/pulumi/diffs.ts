import { isDeepStrictEqual } from "node:util";
import { sameStorage } from "./backends";
import { isUnknown } from "./inputs";

// What a diff compares. Old values are state outputs (which carry the inputs), new ones are
// checked inputs; `__provider` is never compared, so a new build of kindling changes nothing.

type Props = Record<string, unknown>;

/**
 * Properties whose change replaces the resource: the given keys, and the backend when it
 * points at other storage. A value still unknown in preview counts as a replacement: it may
 * turn out different, and preview must never show an update that `up` turns into a
 * replacement (the diff at `up` time, with the value known, has the last word).
 */
export function replacedBy(olds: object, news: object, keys: string[]): string[] {
  const o = olds as Props;
  const n = news as Props;
  const replaces = keys.filter((k) => isUnknown(n[k]) || !isDeepStrictEqual(o[k], n[k]));
  // Only the fields that say which storage it is count: an unknown one (or a backend unknown as
  // a whole) differs from every known value, while an unknown credential changes in place.
  if (!sameStorage(o.backend as Props, n.backend as Props)) replaces.push("backend");
  return replaces;
}

/** True when any of the keys differs, or is unknown and so may differ. */
export function changedIn(olds: object, news: object, keys: string[]): boolean {
  const o = olds as Props;
  const n = news as Props;
  return keys.some((k) => isUnknown(n[k]) || !isDeepStrictEqual(o[k], n[k]));
}

/**
 * Whether the old object must go before its replacement is made: when both would have the same
 * name (names are unique per backend), or may have, the name being unknown in preview.
 */
export function sameName(olds: object, news: object): boolean {
  const n = (news as Props).name;
  return isUnknown(n) || (olds as Props).name === n;
}
