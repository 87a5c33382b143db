import type { Readable } from "node:stream";
import { logger } from "../util/log";
import type { ImageService, NewImage, UploadResult } from "./contract";

// A new image with the given bytes, or none at all: the image is made (queued), its data
// uploaded and checked by the service client (the size and hashes of what was sent against
// what the service recorded), and on any failure the half-made image is deleted before the
// error goes on.

/** Properties Glance keeps for itself (its schema's own fields and prefixes): never carried over from a source. */
const RESERVED = new Set([
  "id", "name", "status", "container_format", "disk_format", "size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value",
  "created_at", "updated_at", "visibility", "protected", "owner", "min_disk", "min_ram", "tags", "locations", "direct_url", "self",
  "file", "schema", "os_hidden", "stores",
]);
const RESERVED_PREFIXES = ["os_glance", "img_signature"];

/** `properties` without the names Glance reserves (a copied volume's metadata may hold anything). */
export function carriedProperties(properties: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(properties).filter(([k]) => !RESERVED.has(k) && !RESERVED_PREFIXES.some((p) => k.startsWith(p))));
}

export async function uploadNewImage(service: ImageService, image: NewImage, body: Readable, opts: { sizeBytes?: number; signal?: AbortSignal } = {}): Promise<UploadResult> {
  // Protected only once whole: a protected half-made image could not be deleted.
  const { protected: wanted, ...rest } = image;
  const made = await service.create({ ...rest, protected: false });
  try {
    const result = await service.upload(made.id, body, opts);
    return wanted ? { ...result, image: await service.update(made.id, { set: { protected: true } }) } : result;
  } catch (err) {
    body.destroy();
    await service.delete(made.id).catch((cleanup: Error) =>
      logger().warn({ service: service.name, image: made.id, err: cleanup.message }, "a failed image upload left its image behind; delete it by hand"));
    throw err;
  }
}
