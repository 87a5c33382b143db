import type { Inspection } from "../drivers/contract";
import { errorMessage } from "../util/errors";
import { logger } from "../util/log";

/**
 * After a create-like driver call failed: if the backend holds nothing for the object, its
 * record goes too, so records and storage stay in step; if something is left, the record stays,
 * marked error, for a delete to clean up. When the backend cannot even be asked, assume
 * something is left: a record too many is safer than storage nobody knows about.
 */
export async function settleFailedCreate(
  kind: "volume" | "snapshot",
  id: string,
  hooks: { inspect: () => Promise<Inspection>; forget: () => Promise<void>; markError: () => Promise<void> },
): Promise<void> {
  let left: Inspection = { exists: true };
  try {
    left = await hooks.inspect();
  } catch (err) {
    logger().warn({ [kind]: id, err: errorMessage(err) }, `could not inspect the ${kind} after a failed create`);
  }
  if (left.exists) await hooks.markError();
  else await hooks.forget();
}
