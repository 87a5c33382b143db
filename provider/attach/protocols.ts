import type { ConnectionInfo } from "../persistence/records";
import { InvalidInputError } from "../util/errors";

// Protocols kindling serves itself, for every backend, over the drivers' open(): the driver
// is not asked about these. Others (local, rbd, iscsi) are the driver's own.

export const SERVED_PROTOCOLS = ["nbd"] as const;

export function isServedProtocol(protocol: string): boolean {
  return (SERVED_PROTOCOLS as readonly string[]).includes(protocol);
}

/** Where `kindling nbd serve` listens by default; connection info points there. */
export function nbdAddress(env: NodeJS.ProcessEnv = process.env): { host: string; port: number } {
  const text = env.KINDLING_NBD_ADDRESS || "127.0.0.1:10809";
  const match = /^(.+):(\d+)$/.exec(text);
  if (!match || Number(match[2]) > 65535) throw new InvalidInputError("KINDLING_NBD_ADDRESS", `must be HOST:PORT, not ${JSON.stringify(text)}`);
  return { host: match[1], port: Number(match[2]) };
}

/** A served export takes any client: only the connector's shape is checked. */
export function validateServedConnector(connector: Record<string, unknown>): void {
  if (connector.host !== undefined && typeof connector.host !== "string") throw new InvalidInputError("connector.host", "must be a string");
}

/** Whether `kindling nbd serve` runs with TLS (KINDLING_NBD_TLS=cert|psk), for the clients' URIs. */
function nbdTls(env: NodeJS.ProcessEnv = process.env): false | "cert" | "psk" {
  const value = env.KINDLING_NBD_TLS;
  if (!value || value === "off") return false;
  if (value !== "cert" && value !== "psk") throw new InvalidInputError("KINDLING_NBD_TLS", "must be off, cert or psk");
  return value;
}

/** Connection info for an NBD export: export names are ids, never paths. */
export function servedConnectionInfo(protocol: string, exportName: string, attachMode: "rw" | "ro", qosSpecs: Record<string, string>): ConnectionInfo {
  const { host, port } = nbdAddress();
  const tls = nbdTls();
  return {
    protocol,
    data: {
      host,
      port,
      export_name: exportName,
      uri: `${tls ? "nbds" : "nbd"}://${host.includes(":") ? `[${host}]` : host}:${port}/${encodeURIComponent(exportName)}`,
      tls: tls !== false,
      ...(tls ? { tls_mode: tls } : {}),
      access_mode: attachMode,
      ...(Object.keys(qosSpecs).length ? { qos_specs: { ...qosSpecs } } : {}),
    },
  };
}
