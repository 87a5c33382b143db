import { z } from "zod";
import { nameSchema, withoutReservedKeys } from "../../util/names";

/** Ceph pool names kindling accepts: the characters Ceph tools take without quoting. */
export const cephPoolSchema = z
  .string()
  .regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$/, "must be a Ceph pool name (letters, digits, '_', '.', '-'; at most 100)");

/**
 * An `rbd` backend: volumes as RBD images in one Ceph pool, or one pool per kindling pool.
 * The cluster is reached through the `rbd` and `ceph` commands (librados), never a service.
 */
export const rbdConfigSchema = z
  .strictObject({
    driver: z.literal("rbd"),
    /** One Ceph pool; the kindling pool takes its name. */
    pool: cephPoolSchema.optional(),
    /** Several pools: kindling pool name -> Ceph pool name. */
    pools: withoutReservedKeys(z.record(nameSchema, cephPoolSchema)).optional(),
    /** A ceph.conf to read (monitors, and a keyring when no key is given). */
    cephConf: z.string().min(1, "must be a file path").optional(),
    /** Monitors, "host:port[,host:port...]", when there is no ceph.conf. */
    monHost: z
      .string()
      .regex(/^(\[?[A-Za-z0-9.:-]+\]?(:\d{1,5})?)(,\[?[A-Za-z0-9.:-]+\]?(:\d{1,5})?)*$/, "must be host:port[,host:port...]")
      .optional(),
    /** The cephx user, without "client.". */
    user: z
      .string()
      .regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/, "must be a cephx user name without the \"client.\" prefix")
      .default("admin"),
    /** A keyring file holding the user's key. */
    keyring: z.string().min(1, "must be a file path").optional(),
    /** The user's key itself (secret): never on a command line, in a log or in an error. */
    key: z
      .string()
      .regex(/^[A-Za-z0-9+/]{16,}={0,2}$/, "must be a cephx key (base64, as `ceph auth print-key` prints it)")
      .optional(),
    /**
     * Whose cephx user a connection hands its consumer: its own (always), made with caps on the
     * volume's pool and removed when the connection ends, so revoking one consumer never means
     * rotating the backend's key; the backend's (never); or its own when this user may make
     * users, else this user's (auto: a user that may not is no admin).
     */
    attachmentUsers: z.enum(["auto", "always", "never"]).default("auto"),
    /** Cinder's rbd_max_clone_depth: a clone whose chain of parents would pass it is flattened. 0: always copy. */
    maxCloneDepth: z.number().int().min(0).max(64).default(5),
    /** Deleting a snapshot (or a volume) that clones still depend on: flatten them first, or refuse. */
    dependentClones: z.enum(["flatten", "refuse"]).default("flatten"),
    /** How long one Ceph operation may wait for a monitor or OSD before it fails. */
    timeoutSeconds: z.number().int().min(1).max(3600).default(30),
    reservedPercentage: z.number().int().min(0).max(100).default(0),
    maxOverSubscriptionRatio: z.number().min(1).default(20),
  })
  .refine((c) => (c.pool === undefined) !== (c.pools === undefined), { message: "give exactly one of pool or pools", path: ["pool"] })
  .refine((c) => c.pools === undefined || Object.keys(c.pools).length > 0, { message: "must name at least one pool", path: ["pools"] })
  .refine((c) => c.cephConf !== undefined || c.monHost !== undefined, { message: "give cephConf or monHost", path: ["monHost"] })
  .refine((c) => c.keyring === undefined || c.key === undefined, { message: "give keyring or key, not both", path: ["key"] });

export type RbdConfig = z.infer<typeof rbdConfigSchema>;

export const RBD_FEATURES = ["layering", "striping", "exclusive-lock", "object-map", "fast-diff", "deep-flatten", "journaling", "data-pool"] as const;

/** A size in bytes, or with a K/M suffix as rbd takes it ("64K", "4M"). */
const byteSize = z
  .string()
  .regex(/^[1-9][0-9]*[KM]?$/, "must be a number of bytes, or with a K or M suffix (e.g. 64K, 4M)")
  .transform((s) => Number(s.replace(/[KM]$/, "")) * (s.endsWith("M") ? 1024 * 1024 : s.endsWith("K") ? 1024 : 1));

const powerOfTwo = (n: number) => (n & (n - 1)) === 0;

/** Extra specs the rbd driver understands; anything else is refused. */
export const rbdExtraSpecsSchema = z
  .strictObject({
    /** Comma-separated image features, e.g. "layering,exclusive-lock,object-map,fast-diff". */
    features: z
      .string()
      .transform((s) => s.split(",").map((f) => f.trim()).filter(Boolean))
      .refine((fs) => fs.length > 0, "must name at least one feature")
      .refine((fs) => fs.every((f) => (RBD_FEATURES as readonly string[]).includes(f)), `must be features from: ${RBD_FEATURES.join(", ")}`)
      .refine((fs) => !fs.includes("object-map") || fs.includes("exclusive-lock"), "object-map needs exclusive-lock")
      .refine((fs) => !fs.includes("fast-diff") || fs.includes("object-map"), "fast-diff needs object-map")
      .refine((fs) => !fs.includes("journaling") || fs.includes("exclusive-lock"), "journaling needs exclusive-lock")
      .optional(),
    stripe_unit: byteSize.refine(powerOfTwo, "must be a power of two").optional(),
    stripe_count: z.string().regex(/^[1-9][0-9]{0,3}$/, "must be a whole number from 1 to 9999").transform(Number).optional(),
    object_size: byteSize.refine((n) => powerOfTwo(n) && n >= 4096 && n <= 32 * 1024 * 1024, "must be a power of two from 4K to 32M").optional(),
    data_pool: cephPoolSchema.optional(),
  })
  .refine((s) => (s.stripe_unit === undefined) === (s.stripe_count === undefined), { message: "give stripe_unit and stripe_count together", path: ["stripe_unit"] })
  .refine((s) => s.stripe_unit === undefined || s.stripe_unit <= (s.object_size ?? 4 * 1024 * 1024), { message: "must not be larger than object_size (4M by default)", path: ["stripe_unit"] });

export type RbdExtraSpecs = z.infer<typeof rbdExtraSpecsSchema>;

/** Cinder's front-end QoS keys and the librbd image settings that enforce them. */
export const QOS_TO_LIBRBD: Record<string, string> = {
  total_iops_sec: "rbd_qos_iops_limit",
  read_iops_sec: "rbd_qos_read_iops_limit",
  write_iops_sec: "rbd_qos_write_iops_limit",
  total_bytes_sec: "rbd_qos_bps_limit",
  read_bytes_sec: "rbd_qos_read_bps_limit",
  write_bytes_sec: "rbd_qos_write_bps_limit",
};
