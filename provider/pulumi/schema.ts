// schema.json, the Pulumi package schema of kindling's resources, made from the zod schemas
// that check inputs, so the two cannot drift apart: `make schema` writes it, and a test fails
// when the committed file differs from what this makes.
import { z } from "zod";
import { attachmentInputsSchema, imageInputsSchema, snapshotInputsSchema, volumeInputsSchema } from "./inputs";

type Json = Record<string, unknown>;

/** Inputs the SDK sets itself; not part of the user-facing schema. */
const INTERNAL = new Set(["resourceName", "ownerKey"]);

const BACKEND_REF = { $ref: "#/types/kindling:index:Backend" };

/** A zod schema's JSON Schema, as a Pulumi property type. */
function property(schema: z.ZodType, key: string): Json {
  if (key === "backend") return { ...BACKEND_REF, description: "The backend: one entry of kindling's configuration file plus its name." };
  const json = z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as Json;
  return toPulumi(json);
}

function toPulumi(json: Json): Json {
  if (Array.isArray(json.anyOf)) {
    // Specs accept strings, numbers and booleans; Pulumi types them as strings.
    return { type: "string" };
  }
  if (Array.isArray(json.enum)) return { type: "string", description: `One of: ${(json.enum as string[]).join(", ")}.` };
  switch (json.type) {
    case "integer":
      return { type: "integer" };
    case "number":
      return { type: "number" };
    case "boolean":
      return { type: "boolean" };
    case "string":
      return { type: "string" };
    case "array":
      return { type: "array", items: json.items && typeof json.items === "object" ? toPulumi(json.items as Json) : { $ref: "pulumi.json#/Any" } };
    case "object": {
      const values = json.additionalProperties;
      return { type: "object", additionalProperties: values && typeof values === "object" && Object.keys(values).length ? toPulumi(values as Json) : { $ref: "pulumi.json#/Any" } };
    }
    default:
      return { $ref: "pulumi.json#/Any" };
  }
}

function inputs(schema: z.ZodObject): { inputProperties: Json; requiredInputs: string[] } {
  const inputProperties: Json = {};
  const requiredInputs: string[] = [];
  for (const [key, field] of Object.entries(schema.shape as Record<string, z.ZodType>)) {
    if (INTERNAL.has(key)) continue;
    inputProperties[key] = property(field, key);
    if (!field.safeParse(undefined).success) requiredInputs.push(key);
  }
  return { inputProperties, requiredInputs };
}

function resource(description: string, schema: z.ZodObject, outputs: Record<string, Json>): Json {
  const { inputProperties, requiredInputs } = inputs(schema);
  return {
    description,
    inputProperties,
    requiredInputs,
    properties: { ...inputProperties, ...outputs },
    required: [...requiredInputs, ...Object.keys(outputs).filter((k) => outputs[k].required !== false)],
  };
}

const str = (description: string): Json => ({ type: "string", description });
const optional = (p: Json): Json => ({ ...p, required: false });

export function packageSchema(version: string): Json {
  const schema = {
    name: "kindling",
    displayName: "kindling",
    version,
    description: "Block storage volumes as code: volumes, snapshots and attachments on kindling's backends, and images in its image services.",
    resources: {
      "kindling:index:Volume": resource("A block storage volume.", volumeInputsSchema, {
        volumeId: str("The volume's id."),
        // An input that may be left to the image; the volume always has one.
        sizeGiB: { type: "integer", description: "The volume's size in GiB: as given, or what its image needed." },
        status: str("creating, available, in-use, extending, deleting, error, error_deleting or deleted."),
        backendName: str("The backend's name."),
        location: optional(str("Where the backend keeps the volume (a file path, pool/image).")),
        createdAt: str("When the volume was created (ISO 8601)."),
        dump: { type: "object", additionalProperties: { $ref: "pulumi.json#/Any" }, description: "The volume's record, as `Volume.dump()` gives it." },
        imageId: optional(str("The id, in its image service, of the image the volume was made from.")),
        imageService: optional(str("The image service the volume's image came from.")),
        imageDigest: optional(str("The strongest digest the image's bytes were checked against, as algo:hex.")),
        expansion: optional({ type: "object", additionalProperties: { $ref: "pulumi.json#/Any" }, description: "Set by an update that grew the volume: node_expansion_required, and per connection the consumerAction (block_resize, reconnect) a hypervisor needs for its guest to see the new size." }),
      }),
      "kindling:index:Snapshot": resource("A point-in-time copy of a volume.", snapshotInputsSchema, {
        snapshotId: str("The snapshot's id."),
        volumeSizeGiB: { type: "integer", description: "The size of the volume when the snapshot was taken." },
        status: str("creating, available, deleting, error or deleted."),
        createdAt: str("When the snapshot was taken (ISO 8601)."),
        dump: { type: "object", additionalProperties: { $ref: "pulumi.json#/Any" }, description: "The snapshot's record." },
      }),
      "kindling:index:Attachment": resource("A volume made reachable over a protocol, optionally as a block device on this host.", attachmentInputsSchema, {
        connectionId: str("The connection's id."),
        connectionInfo: { type: "object", additionalProperties: { $ref: "pulumi.json#/Any" }, description: "How to reach the volume, in Cinder's shape ({ driver_volume_type, data }); secret where it holds credentials." },
        devicePath: optional(str("The block device on the host that ran the program, when attached locally.")),
        libvirtXml: optional(str("The libvirt <disk> element for the volume (local, nbd, rbd), for `virsh attach-device`.")),
        libvirtSecretXml: optional(str("The libvirt <secret> an rbd disk's <auth> names; its value is connectionInfo.data.key.")),
        dump: { type: "object", additionalProperties: { $ref: "pulumi.json#/Any" }, description: "The connection's record." },
      }),
      "kindling:index:Image": resource("An image in an image service (Glance) of kindling's configuration, made from a volume, a snapshot, a URL or a file; its name, tags, properties, visibility and protection change in place.", imageInputsSchema, {
        imageId: str("The image's id in its service."),
        serviceName: str("The image service's name in kindling's configuration."),
        status: str("The image's status in its service (active once made)."),
        sizeBytes: optional({ type: "integer", description: "The image's size in bytes." }),
        checksum: optional(str("md5 of the image's bytes (Glance's checksum).")),
        hashAlgo: optional(str("The service's secure hash algorithm (os_hash_algo).")),
        hashValue: optional(str("The service's secure hash of the bytes (os_hash_value).")),
        diskFormat: optional(str("The image's disk format, as its content says (raw, qcow2...).")),
        createdAt: str("When the image was created (ISO 8601)."),
      }),
    },
    types: {
      "kindling:index:Backend": {
        type: "object",
        description: "A backend: `name`, `driver` and the driver's settings, as in one entry of kindling's configuration file.",
        properties: { name: { type: "string" }, driver: { type: "string" } },
        required: ["name", "driver"],
      },
    },
  };
  // `required: false` marked optional outputs above; it is not a schema keyword.
  return JSON.parse(JSON.stringify(schema, (k, v) => (k === "required" && v === false ? undefined : v))) as Json;
}

if (require.main === module) {
  const version = (require("../../../package.json") as { version: string }).version;
  process.stdout.write(`${JSON.stringify(packageSchema(version), null, 2)}\n`);
}
