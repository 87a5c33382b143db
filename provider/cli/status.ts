import type { Busy } from "../library/tracked";

/**
 * A status as a person reads it in a list: with the operation that holds the object now, or a
 * note that the process which held it is gone (the next operation on it repairs it).
 */
export function statusText(object: { status: string; busy?: Busy }): string {
  const busy = object.busy;
  if (!busy) return object.status;
  return busy.stale ? `${object.status} (interrupted: ${busy.operation} by ${busy.by} did not finish)` : `${object.status} (${busy.operation} by ${busy.by})`;
}
