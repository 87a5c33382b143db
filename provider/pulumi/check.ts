import { createHash } from "node:crypto";
import type { z } from "zod";
import { Backend, type BackendConfig } from "../library/backend";
import { KindlingError, errorMessage } from "../util/errors";
import { isUnknown } from "./inputs";

export interface CheckFailure {
  property: string;
  reason: string;
}

/**
 * Checks inputs one property at a time, so that a value still unknown during preview is
 * skipped rather than reported, and every failure names its property.
 */
export function checkProperties(schema: z.ZodObject, inputs: Record<string, unknown>): CheckFailure[] {
  const failures: CheckFailure[] = [];
  const shape = schema.shape as Record<string, z.ZodType>;
  for (const [key, value] of Object.entries(inputs)) {
    if (key === "__provider" || isUnknown(value)) continue;
    const field = shape[key];
    if (!field) {
      failures.push({ property: key, reason: `${key}: unknown property` });
      continue;
    }
    const result = field.safeParse(value);
    if (!result.success) {
      const issue = result.error.issues[0];
      const path = [key, ...issue.path.map(String)].join(".");
      failures.push({ property: key, reason: `${path}: ${value === undefined ? "is required" : issue.message}` });
    }
  }
  for (const [key, field] of Object.entries(shape)) {
    if (!(key in inputs) && !field.safeParse(undefined).success) failures.push({ property: key, reason: `${key}: is required` });
  }
  return failures;
}

/** The backend, built only to validate it (nothing is created), or a failure naming the field. */
export function checkBackend(config: unknown, failures: CheckFailure[]): Backend | undefined {
  if (config === undefined || isUnknown(config) || failures.some((f) => f.property === "backend")) return undefined;
  try {
    return new Backend(config as BackendConfig, { fieldPrefix: "backend" });
  } catch (err) {
    failures.push({ property: "backend", reason: errorMessage(err) });
    return undefined;
  }
}

/** Runs a driver-level validation and records its complaint against `property`. */
export function checkWith(property: string, failures: CheckFailure[], validate: () => void): void {
  try {
    validate();
  } catch (err) {
    if (!(err instanceof KindlingError)) throw err;
    failures.push({ property, reason: err.message });
  }
}

/**
 * A name for a resource that has none: the program's resource name and a short hash of
 * project/stack/resource. It is the same on every run, so a create interrupted by a crash is
 * found again instead of made twice.
 */
export function defaultName(resourceName: string | undefined, ownerKey: string | undefined): string | undefined {
  if (!resourceName) return undefined;
  const hash = createHash("sha256").update(ownerKey ?? resourceName).digest("hex").slice(0, 8);
  return `${resourceName}-${hash}`;
}
