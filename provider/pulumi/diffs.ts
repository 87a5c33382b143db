import { isDeepStrictEqual } from "node:util";
import { sameStorage } from "./backends";
import { isUnknown } from "./inputs";

// What a diff compares. Old values are state outputs (which carry the inputs), new ones are
// checked inputs; `__provider` is never compared, so a new build of kindling changes nothing.

type Props = Record<string, unknown>;

/**
 * Properties whose change replaces the resource: the given keys, and the backend when it
 * points at other storage. A value still unknown in preview is not counted: it may not
 * change at all, and the diff at `up` time, with the value known, decides.
 */
export function replacedBy(olds: object, news: object, keys: string[]): string[] {
  const o = olds as Props;
  const n = news as Props;
  const replaces = keys.filter((k) => !isUnknown(n[k]) && !isDeepStrictEqual(o[k], n[k]));
  if (!isUnknown(n.backend) && !sameStorage(o.backend as Props, n.backend as Props)) replaces.push("backend");
  return replaces;
}

/** True when any of the keys differs, or is unknown and so may differ. */
export function changedIn(olds: object, news: object, keys: string[]): boolean {
  const o = olds as Props;
  const n = news as Props;
  return keys.some((k) => isUnknown(n[k]) || !isDeepStrictEqual(o[k], n[k]));
}
