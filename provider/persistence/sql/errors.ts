import { BackendError, KindlingError, NoSpaceError, errorMessage } from "../../util/errors";
import type { ServerTarget } from "./target";

/** What went wrong with a database server, whatever its own error code. */
export type ServerFailure = "auth" | "no-database" | "unreachable" | "lost" | "full" | "other";

/**
 * A failure of a database server store as a typed error naming the server (never the
 * password), with the server's own error kept as the cause.
 */
export function serverError(failure: ServerFailure, target: ServerTarget, err: unknown): unknown {
  if (err instanceof KindlingError) return err;
  const detail = errorMessage(err);
  const where = target.location;
  switch (failure) {
    case "auth":
      return new BackendError(`the records store ${where} refused user ${target.user}: authentication failed (${detail})`, {
        hint: "check persistence.password (or passwordFile) and the user's grants on the server",
        cause: err,
      });
    case "no-database":
      return new BackendError(`the records store ${where}: the server has no database ${target.database} (${detail})`, {
        hint: "create it, or name another in persistence.url",
        cause: err,
      });
    case "unreachable":
      return new BackendError(`cannot reach the records store ${where} (${detail})`, {
        hint: `is the database server up, and reachable from this host on ${target.host}:${target.port}?`,
        cause: err,
      });
    case "lost":
      return new BackendError(`lost the connection to the records store ${where} (${detail})`, {
        hint: "a change is recorded whole or not at all; the next operation connects again, so run it again",
        cause: err,
      });
    case "full":
      return new NoSpaceError(`the records store ${where} has no space left on the database server (${detail})`, {
        hint: "free space on the database server",
        cause: err,
      });
    default:
      return new BackendError(`the records store ${where} failed: ${detail}`, { cause: err });
  }
}

/** Socket-level errors: connecting failed, or an open connection broke. */
export function socketFailure(err: unknown, connected: boolean): ServerFailure | undefined {
  const code = (err as { code?: string }).code ?? "";
  if (["ECONNREFUSED", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN"].includes(code)) return "unreachable";
  if (code === "ETIMEDOUT" || /timeout/i.test(errorMessage(err))) return connected ? "lost" : "unreachable";
  if (["ECONNRESET", "EPIPE", "PROTOCOL_CONNECTION_LOST"].includes(code) || /Connection terminated|connection.*closed/i.test(errorMessage(err))) return "lost";
  return undefined;
}
