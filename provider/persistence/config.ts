import { z } from "zod";

/** The `persistence` entry of a configuration file (or of a backend in a Pulumi program). */
export const persistenceConfigSchema = z.discriminatedUnion(
  "storage",
  [
    z.strictObject({ storage: z.literal("memory") }),
    z.strictObject({ storage: z.literal("json"), path: z.string().min(1, "must be a directory path") }),
    z.strictObject({ storage: z.literal("sqlite"), path: z.string().min(1, "must be a database file path") }),
    z.strictObject({
      storage: z.literal("custom"),
      module: z.string().min(1, "must be a module path or package name"),
      options: z.record(z.string(), z.unknown()).optional(),
    }),
  ],
  { error: "storage must be one of memory, json, sqlite, custom" },
);

export type PersistenceConfig = z.infer<typeof persistenceConfigSchema>;
