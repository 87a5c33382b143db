import { GlanceImageService } from "./client";
import { glanceSettings } from "./config";

export { GlanceImageService } from "./client";
export { glanceConfigSchema, type GlanceConfig } from "./config";
export { ForbiddenError } from "./errors";

/**
 * The ImageService of one configured Glance: `config` is its entry under imageServices, and
 * errors in it name the field from `prefix` (e.g. "imageServices.glance.auth.projectId").
 */
export function glanceImageService(name: string, config: unknown, prefix = `imageServices.${name}`): GlanceImageService {
  return new GlanceImageService(name, glanceSettings(config, prefix));
}
