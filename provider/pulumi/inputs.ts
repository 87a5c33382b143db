import { z } from "zod";
import { specsSchema } from "../drivers/qos";
import { copyToImageSchema } from "../library/images";
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

/** A digest as users write it (lowercase or not), checked for its length here, against the bytes at copy time. */
const hex = (digits: number, algo: string) => z.string().regex(new RegExp(`^[0-9a-fA-F]{${digits}}$`), `must be a ${algo} digest: ${digits} hex digits`);
const sha256Schema = hex(64, "sha256");
const sha512Schema = hex(128, "sha512");

/** Inputs every resource has that the SDK fills in, not the user. */
const internal = {
  /** The resource's name in the program, for the default volume name. */
  resourceName: z.string().optional(),
  /** project/stack/resource: finds what an interrupted create already made. */
  ownerKey: z.string().optional(),
};

export const volumeInputsSchema = z.strictObject({
  backend: backendInputSchema,
  /** Required, unless `image` is given: the size then defaults to what the image needs. */
  sizeGiB: sizeGiBSchema.optional(),
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
  /**
   * An image reference as the command takes it: `SERVICE:NAME_OR_ID` (an image service of
   * kindling's configuration), `file:PATH` or an http(s) URL. A change replaces the volume.
   */
  image: z.string().min(1, "must be an image reference: SERVICE:NAME_OR_ID, file:PATH or an http(s) URL").max(8192, "must be at most 8192 characters").optional(),
  /** The image's sha256, checked with every digest the source offers; a change replaces the volume. */
  imageSha256: sha256Schema.optional(),
  /** The image's sha512, as imageSha256. */
  imageSha512: sha512Schema.optional(),
  /** Copy an image nobody vouches for (no digest from the source nor the program). */
  allowUnverifiedImage: z.boolean().optional(),
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

/** What the library takes for a new image, as the Image resource takes it too. */
const imageFields = copyToImageSchema.shape;

/** An image in an image service of kindling's configuration, made from one source. */
export const imageInputsSchema = z.strictObject({
  /** The image service's name in kindling's configuration; optional when it has one. */
  service: nameSchema.optional(),
  /** Default: the resource name and a short stable suffix. */
  name: imageFields.name.optional(),
  /** The backend holding the volume or snapshot the image is made from. */
  backend: backendInputSchema.optional(),
  /** Made from this volume (through a temporary snapshot). One source: volume, snapshot, url or file. */
  volume: idSchema.optional(),
  /** Made from this snapshot. */
  snapshot: z.string().min(1, "must be a snapshot id").optional(),
  /** Made from the bytes at this http(s) URL. */
  url: z.string().regex(/^https?:\/\/[^\s]+$/, "must be an http:// or https:// URL").max(8192).optional(),
  /** Made from this local file (on the host that runs the program). */
  file: z.string().min(1, "must be a file path").max(4096).optional(),
  /** The url's or file's sha256, checked as the bytes pass. */
  sha256: sha256Schema.optional(),
  /** The url's or file's sha512. */
  sha512: sha512Schema.optional(),
  /** Make the image from a url or file that nobody vouches for (no digest from it or the program). */
  allowUnverified: z.boolean().optional(),
  tags: imageFields.tags,
  /** Set on the image besides what the source carries; the ones the program sets are kept as it says. */
  properties: imageFields.properties,
  visibility: z.enum(["private", "shared", "community", "public"], { error: "must be one of private, shared, community, public" }).optional(),
  /** A protected image cannot be deleted: set it to false (and `pulumi up`) before destroying. */
  protected: z.boolean().optional(),
  ...internal,
});

export type VolumeInputs = z.infer<typeof volumeInputsSchema> & { __provider?: string };
export type SnapshotInputs = z.infer<typeof snapshotInputsSchema> & { __provider?: string };
export type AttachmentInputs = z.infer<typeof attachmentInputsSchema> & { __provider?: string };
export type ImageInputs = z.infer<typeof imageInputsSchema> & { __provider?: string };

/** The outputs each resource adds to its inputs. */
export const volumeOutputKeys = ["volumeId", "status", "backendName", "location", "createdAt", "dump", "imageId", "imageService", "imageDigest", "expansion"] as const;
export const snapshotOutputKeys = ["snapshotId", "volumeSizeGiB", "status", "createdAt", "dump"] as const;
export const attachmentOutputKeys = ["connectionId", "connectionInfo", "devicePath", "libvirtXml", "libvirtSecretXml", "dump"] as const;
export const imageOutputKeys = ["imageId", "serviceName", "status", "sizeBytes", "checksum", "hashAlgo", "hashValue", "diskFormat", "createdAt"] as const;
