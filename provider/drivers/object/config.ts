import { z } from "zod";

// An `object` backend: volumes as logs of immutable objects in one S3 bucket or Swift container.

const url = (what: string) =>
  z.string().refine((s) => {
    try {
      return ["http:", "https:"].includes(new URL(s).protocol);
    } catch {
      return false;
    }
  }, `must be an http:// or https:// URL (${what})`);

const noCredentialsInUrl = (s: string) => {
  try {
    const u = new URL(s);
    return !u.username && !u.password;
  } catch {
    return true;
  }
};

/** S3 bucket names: 3-63 lowercase letters, digits, dots and hyphens (radosgw holds Swift containers to this too). */
const bucketName = z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, "must be 3-63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit");
const containerName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{2,255}$/, "must be 3-256 letters, digits, '.', '_' or '-', starting with a letter or digit");
const path = z.string().min(1, "must be a file path");
const powerOfTwo = (n: number) => (n & (n - 1)) === 0;

export const objectConfigSchema = z
  .strictObject({
    driver: z.literal("object"),
    api: z.enum(["s3", "swift"]),
    // S3
    endpoint: url("the S3 endpoint").refine(noCredentialsInUrl, "must not carry credentials; give accessKey and secretKey").optional(),
    bucket: bucketName.optional(),
    region: z.string().regex(/^[a-z0-9-]{1,32}$/, "must be a region name such as us-east-1").default("us-east-1"),
    accessKey: z.string().min(1, "must not be empty").max(256).optional(),
    /** Secret: never in a log, an error or the records. */
    secretKey: z.string().min(1, "must not be empty").max(1024).optional(),
    secretKeyFile: path.optional(),
    // Swift
    authUrl: url("the Swift v1 auth URL").refine(noCredentialsInUrl, "must not carry credentials; give user and key").optional(),
    user: z.string().min(1, "must not be empty").max(256).optional(),
    /** Secret. */
    key: z.string().min(1, "must not be empty").max(1024).optional(),
    keyFile: path.optional(),
    storageUrl: url("the Swift storage URL").optional(),
    /** Secret. */
    token: z.string().min(1, "must not be empty").max(8192).optional(),
    container: containerName.optional(),
    /** This host's place for kindling's local state of these volumes (one directory per backend). */
    cacheDir: path,
    /** The map's block: the unit of reads, writes and the NBD preferred block size. */
    blockSizeKiB: z.number().int().min(4).max(1024).refine(powerOfTwo, "must be a power of two").default(4),
    /** A commit starts once this much waits to go up: the usual size of one record object. */
    segmentSizeMiB: z.number().int().min(1).max(32).default(8),
    /** Writes wait while this much waits and a commit is under way (one record holds it all, so at most 32). */
    dirtyLimitMiB: z.number().int().min(1).max(32).default(32),
    /** Nothing written waits longer than this before its commit starts. */
    dirtyAgeSeconds: z.number().min(0.01).max(60).default(1),
    /** RAM for blocks read from the store, per process. */
    cacheSizeMiB: z.number().int().min(0).max(1024 * 1024).default(256),
    /**
     * remote: FLUSH returns once the data is committed in the store; local: once it is in a
     * journal on this host's disk (cacheDir), replayed by the next writer here after a crash;
     * unsafe: FLUSH returns at once.
     */
    durability: z.enum(["remote", "local", "unsafe"]).default("remote"),
    timeoutSeconds: z.number().int().min(1).max(3600).default(30),
    /** How long a writer's lease lasts unrenewed: a writer that dies elsewhere holds the volume this long. */
    leaseSeconds: z.number().int().min(3).max(3600).default(30),
    /** A checkpoint of the map after this many records. */
    checkpointEvery: z.number().int().min(4).max(100_000).default(64),
    /** Dead records are deleted only this long after a checkpoint past them. */
    gcHorizonSeconds: z.number().int().min(0).max(86_400).default(60),
    /** Deleting a volume that clones still read through to: copy their data into them first, or refuse. */
    dependentClones: z.enum(["flatten", "refuse"]).default("flatten"),
    reservedPercentage: z.number().int().min(0).max(100).default(0),
    maxOverSubscriptionRatio: z.number().min(1).default(20),
  })
  .superRefine((c, ctx) => {
    const need = (field: keyof typeof c, why: string) => {
      if (c[field] === undefined) ctx.addIssue({ code: "custom", path: [field], message: why });
    };
    const refuse = (fields: Array<keyof typeof c>, why: string) => {
      for (const f of fields) if (c[f] !== undefined) ctx.addIssue({ code: "custom", path: [f], message: why });
    };
    if (c.api === "s3") {
      need("endpoint", "is required for api s3");
      need("bucket", "is required for api s3");
      need("accessKey", "is required for api s3");
      if ((c.secretKey === undefined) === (c.secretKeyFile === undefined)) ctx.addIssue({ code: "custom", path: ["secretKey"], message: "give exactly one of secretKey or secretKeyFile" });
      refuse(["authUrl", "user", "key", "keyFile", "storageUrl", "token", "container"], "is for api swift; this backend has api s3");
    } else {
      need("container", "is required for api swift");
      refuse(["endpoint", "bucket", "accessKey", "secretKey", "secretKeyFile"], "is for api s3; this backend has api swift");
      if (c.authUrl !== undefined) {
        need("user", "is required with authUrl");
        if ((c.key === undefined) === (c.keyFile === undefined)) ctx.addIssue({ code: "custom", path: ["key"], message: "give exactly one of key or keyFile" });
        refuse(["storageUrl", "token"], "give authUrl with user and key, or storageUrl with token, not both");
      } else if (c.storageUrl !== undefined) need("token", "is required with storageUrl");
      else ctx.addIssue({ code: "custom", path: ["authUrl"], message: "give authUrl (with user and key) or storageUrl (with token)" });
    }
    if (c.dirtyLimitMiB < c.segmentSizeMiB) ctx.addIssue({ code: "custom", path: ["dirtyLimitMiB"], message: "must be at least segmentSizeMiB" });
  });

export type ObjectConfig = z.infer<typeof objectConfigSchema>;

/** The object driver takes no extra specs: every volume of a backend is laid out the same way. */
export const objectExtraSpecsSchema = z.strictObject({});
