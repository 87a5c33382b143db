import { errorMessage } from "../util/errors";

/**
 * A create that made something and then failed: the engine records the resource with this id
 * and these outputs (and the reasons), so the next `up` retries or deletes it instead of
 * leaking it.
 */
export function partialFailure(id: string, properties: Record<string, unknown>, cause: unknown): Error {
  const err = new Error(`created ${id} but it did not become usable: ${errorMessage(cause)}`) as Error & {
    id: string;
    properties: Record<string, unknown>;
    reasons: string[];
  };
  err.id = id;
  err.properties = properties;
  err.reasons = [errorMessage(cause)];
  return err;
}
