import { z } from "zod";
import { InvalidInputError } from "../util/errors";
import type { Specs } from "./contract";
import { withoutReservedKeys } from "../util/names";

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
    const problem = qosValueProblem(String(value));
    if (problem) throw new InvalidInputError(`${field}.${key}`, problem);
  }
  if (specs.total_iops_sec && (specs.read_iops_sec || specs.write_iops_sec)) {
    throw new InvalidInputError(`${field}.total_iops_sec`, "cannot be combined with read_iops_sec or write_iops_sec");
  }
  if (specs.total_bytes_sec && (specs.read_bytes_sec || specs.write_bytes_sec)) {
    throw new InvalidInputError(`${field}.total_bytes_sec`, "cannot be combined with read_bytes_sec or write_bytes_sec");
  }
}

const MAX_QOS_DIGITS = 18;

/**
 * Why a QoS value is not a positive whole number in plain digits, saying which form is wanted.
 * Leading zeros are refused rather than read past: "010" is octal to some tools and 10 to
 * others, and the value is handed on as text.
 */
function qosValueProblem(value: string): string | undefined {
  if (new RegExp(`^[1-9][0-9]{0,${MAX_QOS_DIGITS - 1}}$`).test(value)) return undefined;
  if (/^0+[1-9][0-9]*$/.test(value)) return `must be written without leading zeros: ${value.replace(/^0+/, "")}, not ${value}`;
  if (/^[1-9][0-9]*$/.test(value)) return `must be at most ${MAX_QOS_DIGITS} digits`;
  return "must be a positive whole number in plain digits, without sign, decimal point or leading zeros (e.g. 10)";
}

/** Specs are string maps; numbers and booleans given by programs are kept as their text. */
export const specsSchema = withoutReservedKeys(
  z.record(
    z.string().min(1, "spec keys must not be empty"),
    z.union([z.string(), z.number(), z.boolean()]).transform((v) => String(v)),
  ),
);
