import type { ContainerFormat, DiskFormat, ImageLocation, ImageRecord, ImageStatus, Visibility } from "../contract";

// Glance's image JSON as kindling's ImageRecord: the schema's own fields by name, everything
// else a property (what Glance calls extra properties, always strings).

/** The fields of Glance's image schema, and the ones it reserves for itself (never properties). */
export const RESERVED_FIELDS = new Set([
  "id", "name", "status", "container_format", "disk_format", "size", "virtual_size", "checksum",
  "os_hash_algo", "os_hash_value", "min_disk", "min_ram", "visibility", "protected", "os_hidden",
  "owner", "tags", "created_at", "updated_at", "deleted", "deleted_at", "file", "schema", "self",
  "direct_url", "locations", "stores", "members", "location",
]);

/** Names Glance keeps for itself: its own (os_glance_*) and the reserved fields. */
export function isReservedField(name: string): boolean {
  return RESERVED_FIELDS.has(name) || name.startsWith("os_glance_");
}

type GlanceImage = Record<string, unknown>;

const str = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) ? v : undefined);

export function toImageRecord(image: GlanceImage): ImageRecord {
  const properties: Record<string, string> = {};
  for (const [key, value] of Object.entries(image)) {
    if (isReservedField(key) || value === null || value === undefined) continue;
    properties[key] = typeof value === "string" ? value : JSON.stringify(value);
  }
  const algo = str(image.os_hash_algo);
  const value = str(image.os_hash_value);
  return {
    id: String(image.id),
    name: str(image.name),
    status: String(image.status) as ImageStatus,
    diskFormat: str(image.disk_format) as DiskFormat | undefined,
    containerFormat: str(image.container_format) as ContainerFormat | undefined,
    sizeBytes: num(image.size),
    virtualSizeBytes: num(image.virtual_size),
    checksum: str(image.checksum),
    hash: algo && value ? { algo, value } : undefined,
    minDiskGiB: num(image.min_disk) ?? 0,
    minRamMiB: num(image.min_ram) ?? 0,
    visibility: (str(image.visibility) ?? "private") as Visibility,
    protected: image.protected === true,
    hidden: image.os_hidden === true,
    owner: str(image.owner),
    tags: Array.isArray(image.tags) ? image.tags.map(String) : [],
    properties,
    directUrl: str(image.direct_url),
    locations: Array.isArray(image.locations) ? image.locations.map(toLocation) : undefined,
    createdAt: String(image.created_at),
    updatedAt: String(image.updated_at),
  };
}

export function toLocation(l: unknown): ImageLocation {
  const o = (l ?? {}) as { url?: unknown; metadata?: unknown };
  return { url: String(o.url), metadata: typeof o.metadata === "object" && o.metadata !== null ? (o.metadata as Record<string, unknown>) : {} };
}
