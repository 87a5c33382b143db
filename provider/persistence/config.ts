import { z } from "zod";

/** How a database server store talks TLS: `true` for the system's CAs, or files of one's own. */
const tlsSchema = z.union([
  z.literal(true),
  z.strictObject({
    /** The CA that signed the server's certificate (a PEM file). */
    ca: z.string().min(1, "must be a PEM file path").optional(),
    /** A client certificate and its key, for servers that ask for one. */
    cert: z.string().min(1, "must be a PEM file path").optional(),
    key: z.string().min(1, "must be a PEM file path").optional(),
    /** false accepts any server certificate: only for tests of one's own. */
    rejectUnauthorized: z.boolean().optional(),
    /** The name the server's certificate must carry, when it is not the URL's host. */
    servername: z.string().min(1).optional(),
  }),
], { error: "must be true or an object of ca, cert, key, rejectUnauthorized, servername" });

const SCHEMES: Record<"postgres" | "mysql", string[]> = { postgres: ["postgres:", "postgresql:"], mysql: ["mysql:", "mariadb:"] };

/**
 * A database server: `url` names the server, user and database (never the password: URLs end
 * up in logs, messages and Pulumi state), `password` or `passwordFile` the secret.
 */
function serverSchema<S extends "postgres" | "mysql">(storage: S) {
  return z.strictObject({
    storage: z.literal(storage),
    url: z.string().min(1, `must be a URL such as ${storage}://kindling@db.example:${storage === "postgres" ? 5432 : 3306}/kindling`),
    password: z.string().min(1, "must not be empty").optional(),
    passwordFile: z.string().min(1, "must be a file path").optional(),
    tls: tlsSchema.optional(),
    pool: z.strictObject({ max: z.number().int().min(1, "must be at least 1").max(100, "must be at most 100") }).optional(),
    /** How long connecting may take before the store says it cannot reach the server. */
    timeoutSeconds: z.number().positive("must be positive").max(600, "must be at most 600").optional(),
  }).superRefine((entry, ctx) => {
    let url: URL;
    try {
      url = new URL(entry.url);
    } catch {
      ctx.addIssue({ code: "custom", path: ["url"], message: `must be a URL such as ${storage}://kindling@db.example/kindling` });
      return;
    }
    const problem = !SCHEMES[storage].includes(url.protocol) ? `must start with ${SCHEMES[storage].join(" or ")}//`
      : url.password ? `must not carry the password; give it as password or passwordFile (a secret)`
      : !url.hostname ? "must name the server's host"
      : !url.username ? "must name the user (user@host)"
      : url.pathname.length <= 1 ? "must name the database (/kindling)"
      : url.search || url.hash ? "must not carry options; use tls, pool and timeoutSeconds"
      : undefined;
    if (problem) ctx.addIssue({ code: "custom", path: ["url"], message: problem });
    if (entry.password !== undefined && entry.passwordFile !== undefined) {
      ctx.addIssue({ code: "custom", path: ["passwordFile"], message: "give password or passwordFile, not both" });
    }
  });
}

/** The `persistence` entry of a configuration file (or of a backend in a Pulumi program). */
export const persistenceConfigSchema = z.discriminatedUnion(
  "storage",
  [
    z.strictObject({ storage: z.literal("memory") }),
    z.strictObject({ storage: z.literal("json"), path: z.string().min(1, "must be a directory path") }),
    z.strictObject({ storage: z.literal("sqlite"), path: z.string().min(1, "must be a database file path") }),
    serverSchema("postgres"),
    serverSchema("mysql"),
    z.strictObject({
      storage: z.literal("custom"),
      module: z.string().min(1, "must be a module path or package name"),
      options: z.record(z.string(), z.unknown()).optional(),
    }),
  ],
  { error: "storage must be one of memory, json, sqlite, postgres, mysql, custom" },
);

export type PersistenceConfig = z.infer<typeof persistenceConfigSchema>;
export type ServerPersistenceConfig = Extract<PersistenceConfig, { storage: "postgres" | "mysql" }>;
