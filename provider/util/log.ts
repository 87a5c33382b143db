import pino from "pino";

// Every place a secret can sit in the objects we log. pino replaces these before anything is
// written, so a secret never reaches a log line even when a whole config or connection is logged.
export const REDACT_PATHS = [
  "key", "*.key", "*.*.key",
  "password", "*.password", "*.*.password",
  "secret", "*.secret", "*.*.secret",
  "token", "*.token", "*.*.token",
  "auth_password", "*.auth_password", "*.*.auth_password",
  "connectionString", "*.connectionString",
  "config.backends.*.key", "config.backends.*.password",
  "persistence.password", "*.persistence.password", "*.*.persistence.password",
  // An image service's token sits a level deeper: imageServices.<name>.auth.token.
  "imageServices.*.auth.token", "*.imageServices.*.auth.token", "*.*.imageServices.*.auth.token",
];

export type Logger = pino.Logger;

let root: Logger | undefined;

/** The process-wide logger: JSON on stderr, level from KINDLING_LOG_LEVEL (default warn). */
export function logger(): Logger {
  root ??= pino(
    {
      name: "kindling",
      level: process.env.KINDLING_LOG_LEVEL ?? "warn",
      redact: { paths: REDACT_PATHS, censor: "[secret]" },
    },
    pino.destination(2),
  );
  return root;
}
