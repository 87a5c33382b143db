import { z } from "zod";
import { InvalidInputError } from "../util/errors";
import type { Specs } from "../persistence/records";

/**
 * QoS specs every driver accepts (Cinder's front-end keys). Values are positive whole numbers;
 * they arrive as strings from the command line and config files, as numbers from programs.
 */
export const QOS_KEYS = [
  "read_iops_sec",
  "write_iops_sec",
  "total_iops_sec",
  "read_bytes_sec",
  "write_bytes_sec",
  "total_bytes_sec",
] as const;

export function validateQosSpecs(specs: Specs, field = "qosSpecs"): void {
  for (const [key, value] of Object.entries(specs)) {
    if (!(QOS_KEYS as readonly string[]).includes(key)) {
      throw new InvalidInputError(`${field}.${key}`, `unknown QoS spec; known: ${QOS_KEYS.join(", ")}`);
    }
    if (!/^[1-9][0-9]{0,17}$/.test(String(value))) {
      throw new InvalidInputError(`${field}.${key}`, "must be a positive whole number");
    }
  }
  if (specs.total_iops_sec && (specs.read_iops_sec || specs.write_iops_sec)) {
    throw new InvalidInputError(`${field}.total_iops_sec`, "cannot be combined with read_iops_sec or write_iops_sec");
  }
  if (specs.total_bytes_sec && (specs.read_bytes_sec || specs.write_bytes_sec)) {
    throw new InvalidInputError(`${field}.total_bytes_sec`, "cannot be combined with read_bytes_sec or write_bytes_sec");
  }
}

/** Specs are string maps; numbers and booleans given by programs are kept as their text. */
export const specsSchema = z.record(
  z.string().min(1, "spec keys must not be empty"),
  z.union([z.string(), z.number(), z.boolean()]).transform((v) => String(v)),
);
