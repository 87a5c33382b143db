import { readFileSync } from "node:fs";
import { z } from "zod";
import { InvalidInputError, errorMessage } from "../../util/errors";
import { parseInput } from "../../util/validate";

// A Glance v2 image service in the configuration, beside the backends:
//   "imageServices": { "glance": { "type": "glance", "endpoint": "http://127.0.0.1:9292",
//                                   "auth": { "type": "noauth", "projectId": "...", "userId": "..." } } }

const endpoint = z
  .string()
  .refine((s) => {
    try {
      const u = new URL(s);
      return ["http:", "https:"].includes(u.protocol) && !u.search && !u.hash;
    } catch {
      return false;
    }
  }, "must be an http:// or https:// URL with no query, such as http://127.0.0.1:9292")
  .refine((s) => {
    try {
      const u = new URL(s);
      return !u.username && !u.password;
    } catch {
      return true;
    }
  }, "must not carry credentials; give them in auth");

/** Header values: no spaces or control characters, so nothing can be smuggled into a request. */
const headerWord = (what: string) => z.string().regex(/^[A-Za-z0-9_.@:-]{1,255}$/, `must be ${what}: 1-255 letters, digits, '_', '.', '@', ':' or '-'`);
const path = z.string().min(1, "must be a file path");

/**
 * Glance's `noauth` paste pipeline trusts these identity headers (a Glance with no Keystone,
 * behind something that sets them, or a test one). The project owns what is created.
 */
const noauth = z.strictObject({
  type: z.literal("noauth"),
  projectId: headerWord("a project id"),
  userId: headerWord("a user id"),
  /** member and reader can do everything but make images public (admin). */
  roles: z.array(headerWord("a role name")).min(1, "must name at least one role").default(["member", "reader"]),
});

/** A Keystone token got elsewhere, sent as X-Auth-Token. Secret: never in a log, an error or argv. */
const token = z
  .strictObject({
    type: z.literal("token"),
    token: z.string().min(1, "must not be empty").max(16384).regex(/^[\x21-\x7e]+$/, "must be printable ASCII without spaces").optional(),
    tokenFile: path.optional(),
  })
  .superRefine((a, ctx) => {
    if ((a.token === undefined) === (a.tokenFile === undefined)) ctx.addIssue({ code: "custom", path: ["token"], message: "give exactly one of token or tokenFile" });
  });

export const glanceConfigSchema = z.strictObject({
  type: z.literal("glance"),
  /** The image service's root, as a Keystone catalogue lists it (without /v2). */
  endpoint,
  auth: z.discriminatedUnion("type", [noauth, token]),
  /** How long a request may go without a byte moving (idle, not total: a 100 GiB download takes what it takes). */
  timeoutSeconds: z.number().int().min(1).max(3600).default(60),
  /** A PEM file of the certificate authorities to trust for https, instead of the system's. */
  ca: path.optional(),
});

export type GlanceConfig = z.infer<typeof glanceConfigSchema>;

/** What the client sends: the headers of the configured identity, and the CA's PEM. */
export interface GlanceSettings {
  endpoint: string;
  timeoutMs: number;
  /** Secret when the auth is a token: kept out of every log and error. */
  authHeaders: Record<string, string>;
  ca?: Buffer;
}

/**
 * Parses a service's configuration (an InvalidInputError naming the field, prefixed with
 * `prefix`, e.g. "imageServices.glance") and reads the files it names.
 */
export function glanceSettings(value: unknown, prefix = ""): GlanceSettings {
  const config = parseInput(glanceConfigSchema, value, prefix);
  const field = (name: string) => [prefix, name].filter((p) => p !== "").join(".");
  const read = (name: string, file: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new InvalidInputError(field(name), `cannot be read (${(err as NodeJS.ErrnoException).code ?? errorMessage(err)})`);
    }
  };
  let authHeaders: Record<string, string>;
  if (config.auth.type === "noauth") {
    // oslo.context reads the project from X-Project-Id; older middleware from X-Tenant-Id.
    authHeaders = {
      "x-identity-status": "Confirmed",
      "x-project-id": config.auth.projectId,
      "x-tenant-id": config.auth.projectId,
      "x-user-id": config.auth.userId,
      "x-roles": config.auth.roles.join(","),
    };
  } else {
    const secret = config.auth.token ?? read("auth.tokenFile", config.auth.tokenFile!).toString("utf8").trim();
    if (!/^[\x21-\x7e]{1,16384}$/.test(secret)) throw new InvalidInputError(field("auth.tokenFile"), "must hold one token: printable ASCII without spaces");
    authHeaders = { "x-auth-token": secret };
  }
  return {
    endpoint: config.endpoint.replace(/\/+$/, "").replace(/\/v2$/, ""),
    timeoutMs: config.timeoutSeconds * 1000,
    authHeaders,
    ca: config.ca === undefined ? undefined : read("ca", config.ca),
  };
}
