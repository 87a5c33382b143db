import { z } from "zod";
import { specsSchema } from "../drivers/qos";
import { RESERVED_KEYS, descriptionSchema, metadataSchema, nameSchema, normalizeId, reservedKeyRule, sizeGiBSchema } from "../util/names";

// What the library accepts from callers. Strict objects: an unknown option is an error that
// names it, never silently ignored (cinderlib's misspelled options were).

/**
 * A caller-chosen id: a UUID in either case, recorded in lower case (the form kindling makes
 * ids in), so one id is never recorded in two spellings that lookups tell apart.
 */
const idSchema = z.uuid("must be a UUID").transform(normalizeId);

export const createVolumeSchema = z.strictObject({
  sizeGiB: sizeGiBSchema,
  name: nameSchema.optional(),
  description: descriptionSchema.optional(),
  pool: nameSchema.optional(),
  extraSpecs: specsSchema.optional(),
  qosSpecs: specsSchema.optional(),
  metadata: metadataSchema.optional(),
  /** A caller-chosen id, for idempotent creation (a retry finds what the first try made). */
  id: idSchema.optional(),
});
export type CreateVolumeOptions = z.input<typeof createVolumeSchema>;

/** A volume from an image: the size may be left to the image; unverified sources only when asked. */
export type CreateVolumeFromImageOptions = Omit<CreateVolumeOptions, "sizeGiB"> & { sizeGiB?: number; allowUnverified?: boolean };

export const cloneVolumeSchema = z.strictObject({
  name: nameSchema.optional(),
  description: descriptionSchema.optional(),
  sizeGiB: sizeGiBSchema.optional(),
  metadata: metadataSchema.optional(),
  id: idSchema.optional(),
});
export type CloneVolumeOptions = z.input<typeof cloneVolumeSchema>;

export const volumeFromSnapshotSchema = cloneVolumeSchema;
export type VolumeFromSnapshotOptions = CloneVolumeOptions;

export const createSnapshotSchema = z.strictObject({
  name: nameSchema.optional(),
  description: descriptionSchema.optional(),
  metadata: metadataSchema.optional(),
  id: idSchema.optional(),
});
export type CreateSnapshotOptions = z.input<typeof createSnapshotSchema>;

const MAX_CONNECTOR_KEYS = 64;
const MAX_CONNECTOR_BYTES = 16 * 1024;

/**
 * Where a connector breaks the shape rules (as a path and a rule), or undefined. A connector is
 * kept in the connection record and handed to drivers, so it is bounded like metadata, and a
 * reserved key is refused at any depth, before zod or a driver rebuilds an object from it.
 */
function connectorProblem(connector: unknown): { path: PropertyKey[]; rule: string } | undefined {
  if (typeof connector !== "object" || connector === null || Array.isArray(connector)) return undefined; // the record schema says "must be an object"
  let json: string;
  try {
    json = JSON.stringify(connector);
  } catch {
    return { path: [], rule: "must be plain JSON (no cycles or BigInts)" };
  }
  if (Buffer.byteLength(json, "utf8") > MAX_CONNECTOR_BYTES) return { path: [], rule: `must be at most ${MAX_CONNECTOR_BYTES / 1024} KiB as JSON` };
  if (Object.keys(connector).length > MAX_CONNECTOR_KEYS) return { path: [], rule: `must have at most ${MAX_CONNECTOR_KEYS} keys` };
  // The JSON text bounds the walk; it is a loop, not a recursion, so depth costs no stack.
  const pending: Array<{ at: PropertyKey[]; value: unknown }> = [{ at: [], value: connector }];
  while (pending.length) {
    const { at, value } = pending.pop() as { at: PropertyKey[]; value: unknown };
    if (typeof value !== "object" || value === null) continue;
    for (const [key, child] of Object.entries(value)) {
      if (!Array.isArray(value) && RESERVED_KEYS.includes(key)) return { path: [...at, key], rule: reservedKeyRule(key) };
      pending.push({ at: [...at, key], value: child });
    }
  }
  return undefined;
}

export const connectorSchema = z.preprocess<unknown, z.ZodRecord<z.ZodString, z.ZodUnknown>, Record<string, unknown>>(
  (connector, ctx) => {
    const problem = connectorProblem(connector);
    if (problem) ctx.addIssue({ code: "custom", message: problem.rule, path: problem.path, input: connector });
    return connector;
  },
  z.record(z.string(), z.unknown(), { error: "must be an object" }),
);

export const connectOptionsSchema = z.strictObject({
  attachMode: z.enum(["rw", "ro"]).optional(),
  attachedHost: z.string().max(255).optional(),
  /** A caller-chosen id, for idempotent connection (a retry finds what the first try made). */
  id: idSchema.optional(),
});
export type ConnectOptions = z.input<typeof connectOptionsSchema>;

export const updateVolumeSchema = z.strictObject({
  name: nameSchema.optional(),
  description: descriptionSchema.optional(),
  metadata: metadataSchema.optional(),
  qosSpecs: specsSchema.optional(),
  /** Recorded for later operations (e.g. preallocation of a later extend); no data moves. */
  extraSpecs: specsSchema.optional(),
});
export type UpdateVolumeOptions = z.input<typeof updateVolumeSchema>;

export const updateSnapshotSchema = z.strictObject({
  name: nameSchema.optional(),
  description: descriptionSchema.optional(),
  metadata: metadataSchema.optional(),
});
export type UpdateSnapshotOptions = z.input<typeof updateSnapshotSchema>;
