import { z } from "zod";
import { specsSchema } from "../drivers/qos";
import { descriptionSchema, metadataSchema, nameSchema, sizeGiBSchema } from "../util/names";

// What the library accepts from callers. Strict objects: an unknown option is an error that
// names it, never silently ignored (cinderlib's misspelled options were).

const idSchema = z.uuid("must be a UUID");

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

export const connectorSchema = z.record(z.string(), z.unknown(), { error: "must be an object" });

export const connectOptionsSchema = z.strictObject({
  attachMode: z.enum(["rw", "ro"]).optional(),
  attachedHost: z.string().max(255).optional(),
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
