import type { Backend } from "../library/backend";

// Which object a resource of a stack made, kept as a cinderlib key-value beside the backend's
// records. Written before the object is created, so after a crash (kill -9 of `pulumi up`)
// the next create finds what the interrupted one made instead of making a second one.

/**
 * What a resource makes: a volume, a snapshot, a connection (an Attachment), or an image of the
 * backend's data (recorded once made, since the image service picks its id: only so that preview
 * knows an existing image's id, see image.ts).
 */
export type OwnedKind = "volume" | "snapshot" | "attachment" | "image";

function key(kind: OwnedKind, ownerKey: string): string {
  return `pulumi/${kind}/${ownerKey}`;
}

export async function ownedId(backend: Backend, kind: OwnedKind, ownerKey: string | undefined): Promise<string | undefined> {
  if (!ownerKey) return undefined;
  const [kv] = await backend.persistence.getKeyValues(key(kind, ownerKey));
  return kv?.value;
}

export async function recordOwner(backend: Backend, kind: OwnedKind, ownerKey: string | undefined, id: string): Promise<void> {
  if (ownerKey) await backend.persistence.setKeyValue({ key: key(kind, ownerKey), value: id });
}

export async function forgetOwner(backend: Backend, kind: OwnedKind, ownerKey: string | undefined, id: string): Promise<void> {
  if (ownerKey && (await ownedId(backend, kind, ownerKey)) === id) await backend.persistence.deleteKeyValue(key(kind, ownerKey));
}
