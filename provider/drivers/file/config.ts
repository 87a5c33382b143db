import { z } from "zod";
import { nameSchema, withoutReservedKeys } from "../../util/names";

/** A `file` backend: raw sparse files in one directory, or one directory per pool. */
export const fileConfigSchema = z
  .strictObject({
    driver: z.literal("file"),
    /** One pool, named after the backend. */
    path: z.string().min(1, "must be a directory path").optional(),
    /** Several pools: pool name -> directory. */
    pools: withoutReservedKeys(z.record(nameSchema, z.string().min(1, "must be a directory path"))).optional(),
    /** Percent of each pool's capacity kept free (Cinder's reserved_percentage). */
    reservedPercentage: z.number().int().min(0).max(100).default(0),
    /** How far provisioned sizes may exceed the real capacity (Cinder's default is 20). */
    maxOverSubscriptionRatio: z.number().min(1).default(20),
    /** auto: reflink where the filesystem can, else a sparse copy; reflink: refuse to copy. */
    copyMode: z.enum(["auto", "reflink", "copy"]).default("auto"),
  })
  .refine((c) => (c.path === undefined) !== (c.pools === undefined), {
    message: "give exactly one of path or pools",
    path: ["path"],
  })
  .refine((c) => c.pools === undefined || Object.keys(c.pools).length > 0, {
    message: "must name at least one pool",
    path: ["pools"],
  });

export type FileConfig = z.infer<typeof fileConfigSchema>;

/** Extra specs the file driver understands; anything else is refused. */
export const fileExtraSpecsSchema = z.strictObject({
  /** off: sparse; falloc: reserve blocks (fast, unwritten extents); full: write zeroes. */
  preallocation: z.enum(["off", "falloc", "full"]).optional(),
});
