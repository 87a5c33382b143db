import { z } from "zod";
import { specsSchema } from "../drivers/qos";
import { descriptionSchema, metadataSchema, nameSchema, sizeGiBSchema } from "../util/names";

// The inputs of kindling's Pulumi resources. They are checked property by property in `check`
// (so preview names the property at fault) and they generate schema.json.

/** Set by the engine for values not known yet during preview, whatever the property's type. */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

export function isUnknown(value: unknown): boolean {
  if (value === UNKNOWN) return true;
  if (Array.isArray(value)) return value.some(isUnknown);
  if (value && typeof value === "object") return Object.values(value).some(isUnknown);
  return false;
}

/** A backend as in one configuration file entry, plus its name; the driver checks the rest. */
export const backendInputSchema = z.looseObject({
  name: nameSchema,
  driver: z.string().min(1),
});

const idSchema = z.string().min(1, "must be a volume id");

/** Inputs every resource has that the SDK fills in, not the user. */
const internal = {
  /** The resource's name in the program, for the default volume name. */
  resourceName: z.string().optional(),
  /** project/stack/resource: finds what an interrupted create already made. */
  ownerKey: z.string().optional(),
};

export const volumeInputsSchema = z.strictObject({
  backend: backendInputSchema,
  sizeGiB: sizeGiBSchema,
  name: nameSchema.optional(),
  pool: nameSchema.optional(),
  snapshotId: idSchema.optional(),
  sourceVolumeId: idSchema.optional(),
  extraSpecs: specsSchema.optional(),
  qosSpecs: specsSchema.optional(),
  metadata: metadataSchema.optional(),
  description: descriptionSchema.optional(),
  /** Name or id of an existing volume to bring under management as it is, data and all. */
  adopt: z.string().min(1).optional(),
  ...internal,
});

export const snapshotInputsSchema = z.strictObject({
  backend: backendInputSchema,
  volumeId: idSchema,
  name: nameSchema.optional(),
  description: descriptionSchema.optional(),
  metadata: metadataSchema.optional(),
  ...internal,
});

export const attachmentInputsSchema = z.strictObject({
  backend: backendInputSchema,
  volumeId: idSchema,
  protocol: z.enum(["local", "nbd", "rbd", "iscsi"], { error: "must be one of local, nbd, rbd, iscsi" }),
  connector: z.record(z.string(), z.unknown()).optional(),
  mode: z.enum(["rw", "ro"], { error: "must be rw or ro" }).optional(),
  /** Make a block device on the host that runs the program. */
  attachLocally: z.boolean().optional(),
  ...internal,
});

export type VolumeInputs = z.infer<typeof volumeInputsSchema> & { __provider?: string };
export type SnapshotInputs = z.infer<typeof snapshotInputsSchema> & { __provider?: string };
export type AttachmentInputs = z.infer<typeof attachmentInputsSchema> & { __provider?: string };

/** The outputs each resource adds to its inputs. */
export const volumeOutputKeys = ["volumeId", "status", "backendName", "location", "createdAt", "dump"] as const;
export const snapshotOutputKeys = ["snapshotId", "volumeSizeGiB", "status", "createdAt", "dump"] as const;
export const attachmentOutputKeys = ["connectionId", "connectionInfo", "devicePath", "dump"] as const;
