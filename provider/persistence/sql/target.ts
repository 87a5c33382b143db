import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import type { ServerPersistenceConfig } from "../config";
import { InvalidInputError, errorMessage } from "../../util/errors";

/** Where a database server store connects, with what, as both servers' clients take it. */
export interface ServerTarget {
  host: string;
  port: number;
  user: string;
  database: string;
  password?: string;
  /** TLS options in the form Node's tls.connect takes; undefined for none. */
  ssl?: { ca?: string; cert?: string; key?: string; rejectUnauthorized: boolean; servername?: string };
  poolSize: number;
  timeoutMs: number;
  /** The URL as messages may show it: no password, ever. */
  location: string;
}

function readSecretFile(path: string, field: string): string {
  try {
    return readFileSync(path, "utf8").replace(/\r?\n$/, "");
  } catch (err) {
    throw new InvalidInputError(field, `cannot read ${path}: ${errorMessage(err)}`);
  }
}

/** The validated `persistence` entry as a connection target; files resolve against `baseDir`. */
export function serverTarget(config: ServerPersistenceConfig, defaultPort: number, baseDir = process.cwd()): ServerTarget {
  const url = new URL(config.url);
  const file = (path: string) => resolve(baseDir, path);
  const user = decodeURIComponent(url.username);
  const database = decodeURIComponent(url.pathname.slice(1));
  const port = url.port ? Number(url.port) : defaultPort;
  const tls = config.tls === true ? {} : config.tls;
  return {
    host: url.hostname.replace(/^\[(.*)\]$/, "$1"),
    port,
    user,
    database,
    password: config.password ?? (config.passwordFile ? readSecretFile(file(config.passwordFile), "persistence.passwordFile") : undefined),
    ssl: tls && {
      ca: tls.ca && readSecretFile(file(tls.ca), "persistence.tls.ca"),
      cert: tls.cert && readSecretFile(file(tls.cert), "persistence.tls.cert"),
      key: tls.key && readSecretFile(file(tls.key), "persistence.tls.key"),
      rejectUnauthorized: tls.rejectUnauthorized ?? true,
      servername: tls.servername,
    },
    poolSize: config.pool?.max ?? 5,
    timeoutMs: (config.timeoutSeconds ?? 10) * 1000,
    location: `${config.storage}://${encodeURIComponent(user)}@${url.host}/${encodeURIComponent(database)}`,
  };
}
