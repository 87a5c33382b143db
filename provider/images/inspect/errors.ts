// The one error an unsafe image raises: it names every check that failed, so a caller (and a
// test) can tell a backing file from a polyglot without parsing the message.
import { KindlingError } from "../../util/errors";
import type { CheckFailure } from "./types";

export class UnsafeImageError extends KindlingError {
  /** Every failed check, the first one being the reason given in the message. */
  readonly failures: CheckFailure[];
  constructor(failures: CheckFailure[], opts: { what?: string } = {}) {
    const first = failures[0];
    const more = failures.length > 1 ? ` (also failed: ${failures.slice(1).map((f) => f.check).join(", ")})` : "";
    super("INVALID_INPUT", `${opts.what ?? "image"} refused by check ${first.check}: ${first.reason}${more}`, {
      hint: "kindling reads only self-contained images of allowed formats; convert the image to a single-file qcow2 or raw and try again",
    });
    this.failures = failures;
  }

  /** The names of the failed checks. */
  get checks(): string[] {
    return this.failures.map((f) => f.check);
  }
}
