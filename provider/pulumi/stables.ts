import type { Backend, BackendConfig } from "../library/backend";
import { backendFor, sameStorage } from "./backends";
import { isUnknown } from "./inputs";

// Outputs an in-place update never changes (the id, where the object lives, when it was made),
// copied into the checked inputs of a resource that already exists.
//
// Why: Pulumi's Node dynamic-provider host does not support provider previews, so during
// preview the engine takes an updated resource's outputs to be its new inputs, and every
// output missing from them is unknown. Renaming a volume then showed its snapshot and the
// volumes made from that snapshot as updates too ("~ volumeId: ... => [unknown]"), though
// only the volume changes. DiffResult.stables would say the same thing, but the host drops
// it and the engine does not use it for preview outputs; what check returns is what preview
// shows. A replacement is checked again without old inputs, so a new object never gets the
// old one's values.

type Props = Record<string, unknown>;

/**
 * The stable outputs of the existing resource `olds` belongs to: carried from its old inputs
 * when they hold them, else read from the record `find` names in the backend. Empty for a new
 * resource or whenever they cannot be known (the record is gone, the backend is unreachable
 * or points at other storage): those outputs then stay unknown in preview, as before.
 */
export async function stableOutputs(
  olds: object,
  news: object,
  keys: readonly string[],
  find: (backend: Backend) => Promise<object | undefined>,
): Promise<Props> {
  const o = olds as Props;
  const n = news as Props;
  if (Object.keys(o).length === 0) return {};
  if (typeof o[keys[0]] === "string") return pick(o, keys);
  if (n.backend === undefined || isUnknown(n.backend) || !sameStorage(o.backend as Props, n.backend as Props)) return {};
  try {
    const found = await find(await backendFor(n.backend as BackendConfig));
    return found ? pick(found as Props, keys) : {};
  } catch {
    // Only a better preview is lost; the update itself does not depend on it.
    return {};
  }
}

function pick(from: Props, keys: readonly string[]): Props {
  return Object.fromEntries(keys.filter((k) => from[k] !== undefined).map((k) => [k, from[k]]));
}
