import { z } from "zod";

// The image cache's limits, as a configuration file writes them beside the backends:
// `"imageCache": { "maxSizeGiB": 100, "maxCount": 20, "maxAgeDays": 30 }`. Each limit holds per
// backend and pool (each pool has its own space, and its own cached volumes); a limit left out
// is no limit. The cache is on for every backend once the key is there.

export const imageCacheSettingsSchema = z.strictObject({
  /** The cached volumes' sizes together, in GiB. */
  maxSizeGiB: z.number().positive("must be more than 0").optional(),
  /** How many entries. */
  maxCount: z.number().int("must be a whole number").positive("must be at least 1").optional(),
  /** Days since an entry was last used (filled or cloned from); older ones go at the next fill or prune. */
  maxAgeDays: z.number().positive("must be more than 0").optional(),
});

export type ImageCacheSettings = z.output<typeof imageCacheSettingsSchema>;
