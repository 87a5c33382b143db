// Typed errors. Every error says what is wrong and, where it can, what to do next; callers
// (the command, the Pulumi provider) map `code` to exit codes and check failures.

export type ErrorCode =
  | "NOT_FOUND"
  | "INVALID_INPUT"
  | "IN_USE"
  | "CONFLICT"
  | "NO_SPACE"
  | "INTERRUPTED"
  | "BACKEND_ERROR";

export class KindlingError extends Error {
  readonly code: ErrorCode;
  /** The input field at fault (dotted path), when there is one. */
  readonly field?: string;
  /** What the caller can do about it. */
  readonly hint?: string;

  constructor(code: ErrorCode, message: string, opts: { field?: string; hint?: string; cause?: unknown } = {}) {
    super(opts.hint ? `${message}; ${opts.hint}` : message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    this.field = opts.field;
    this.hint = opts.hint;
  }
}

export class NotFoundError extends KindlingError {
  constructor(what: string, key: string, opts: { field?: string; hint?: string } = {}) {
    super("NOT_FOUND", `${what} ${JSON.stringify(key)} not found`, opts);
  }
}

/** Bad input: names the field and the rule it broke. Raised before anything is created. */
export class InvalidInputError extends KindlingError {
  readonly rule: string;
  constructor(field: string, rule: string, opts: { hint?: string } = {}) {
    super("INVALID_INPUT", `${field}: ${rule}`, { field, hint: opts.hint });
    this.rule = rule;
  }
}

export class InUseError extends KindlingError {
  constructor(message: string, opts: { hint?: string } = {}) {
    super("IN_USE", message, opts);
  }
}

export class ConflictError extends KindlingError {
  constructor(message: string, opts: { field?: string; hint?: string } = {}) {
    super("CONFLICT", message, opts);
  }
}

/** A long operation stopped on request (Ctrl-C); what it had half made was removed. */
export class InterruptedError extends KindlingError {
  constructor(message: string) {
    super("INTERRUPTED", message);
  }
}

/** A backend operation failed: carries the command line (secrets masked) and its stderr. */
export class BackendError extends KindlingError {
  readonly command?: string;
  readonly stderr?: string;
  constructor(message: string, opts: { command?: string; stderr?: string; hint?: string; cause?: unknown; code?: ErrorCode } = {}) {
    super(opts.code ?? "BACKEND_ERROR", message, { hint: opts.hint, cause: opts.cause });
    this.command = opts.command;
    this.stderr = opts.stderr;
  }
}

/** Something not a regular file (a link, a fifo, a directory) where a pool file belongs: refused, never followed. */
export class UnsafeFileError extends BackendError {}

/** The storage ran out of space; whatever was half made has been removed. */
export class NoSpaceError extends BackendError {
  constructor(message: string, opts: { command?: string; stderr?: string; hint?: string; cause?: unknown } = {}) {
    super(message, { ...opts, code: "NO_SPACE" });
  }
}

export function isErrno(err: unknown, ...codes: string[]): err is NodeJS.ErrnoException {
  return typeof err === "object" && err !== null && codes.includes((err as NodeJS.ErrnoException).code ?? "");
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
