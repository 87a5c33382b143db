import { BackendError, ConflictError, InvalidInputError, NotFoundError, type KindlingError } from "../../util/errors";

// Glance's answers as kindling's typed errors. Every message names the endpoint and the call;
// none carries a header (the token is one), only Glance's own short reason.

/** Glance refused the call for this identity (policy): a role or ownership is missing. */
export class ForbiddenError extends BackendError {
  constructor(message: string, opts: { hint?: string } = {}) {
    super(message, opts);
  }
}

/** An HTTP answer that was not the one asked for. */
export interface GlanceAnswer {
  status: number;
  /** The body (Glance's `{"message","code","title"}` with Accept: application/json), at most a few KiB. */
  body: string;
}

/**
 * Glance's reason, on one line: its JSON `message` (which carries HTML line breaks and a
 * generic first sentence), else the body's first line without tags.
 */
export function glanceReason(body: string): string {
  let text = body;
  try {
    const parsed = JSON.parse(body) as { message?: unknown; error?: { message?: unknown } };
    const message = parsed.message ?? parsed.error?.message;
    if (typeof message === "string") text = message;
  } catch {
    // Not JSON: an HTML error page, or a proxy's text.
  }
  text = text
    .replace(/<[^>]*>/g, " ")
    .replace(/^\s*(There was a conflict when trying to complete your request\.|You are not authorized to complete \S+ action\.|The resource could not be found\.|The request returned a \d+ [A-Za-z ]+\.)\s*/, "")
    .replace(/\s+/g, " ")
    .trim();
  return text.length > 300 ? `${text.slice(0, 297)}...` : text;
}

/**
 * The typed error for a status Glance answered `what` with (e.g. "GET /v2/images/ID on
 * http://127.0.0.1:9292"). `subject` names what was asked for, for a NotFoundError.
 */
export function glanceError(what: string, answer: GlanceAnswer, context: { endpoint: string; subject?: { kind: string; key: string }; sizeBytes?: number }): KindlingError {
  const { endpoint, subject } = context;
  const reason = glanceReason(answer.body);
  const said = `${what} answered ${answer.status}${reason ? `: ${reason}` : ""}`;
  switch (answer.status) {
    case 404:
      if (subject) return new NotFoundError(subject.kind, subject.key, { hint: `not on the Glance at ${endpoint} (or not visible to this project)` });
      return new BackendError(said, { code: "NOT_FOUND" });
    case 409:
      return new ConflictError(said, { hint: "the image is not in a state that allows this (an image takes data once; it may be in use)" });
    case 403:
      return new ForbiddenError(said, { hint: "this identity may not do this (public images need the admin role; other projects' images are theirs)" });
    case 401:
      return new ForbiddenError(said, { hint: "the credentials were refused: check imageServices auth (a token may have expired; noauth needs Glance's noauth pipeline)" });
    case 413:
      return new InvalidInputError(
        "sizeBytes",
        `${context.sizeBytes === undefined ? "the image is" : `${context.sizeBytes} bytes are`} more than the Glance at ${endpoint} accepts (its image_size_cap or a storage quota)${reason ? `: ${reason}` : ""}`,
      );
    case 400:
    case 415:
    case 416:
      return new BackendError(said, { code: "INVALID_INPUT" });
    default:
      return new BackendError(said, { hint: answer.status >= 500 ? "Glance failed; its log says why" : undefined });
  }
}
