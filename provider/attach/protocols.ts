import type { ConnectionInfo } from "../persistence/records";
import { InvalidInputError } from "../util/errors";

// Protocols kindling serves itself, for every backend, over the drivers' open(): the driver
// is not asked about these. Others (local, rbd, iscsi) are the driver's own.

export const SERVED_PROTOCOLS = ["nbd"] as const;

export function isServedProtocol(protocol: string): boolean {
  return (SERVED_PROTOCOLS as readonly string[]).includes(protocol);
}

/** HOST:PORT (an IPv6 host in brackets or not), as `--listen`, `--advertise` and KINDLING_NBD_ADDRESS take it. */
export function parseHostPort(field: string, text: string): { host: string; port: number } {
  const match = /^(.+):(\d+)$/.exec(text);
  if (!match || Number(match[2]) > 65535 || /\s/.test(match[1])) throw new InvalidInputError(field, `must be HOST:PORT, not ${JSON.stringify(text)}`);
  return { host: match[1].replace(/^\[(.*)\]$/, "$1"), port: Number(match[2]) };
}

/**
 * Where `kindling nbd serve` listens when not told (`--listen`): KINDLING_NBD_ADDRESS, else
 * 127.0.0.1:10809. Connection info points here only while no server has recorded its address.
 */
export function nbdAddress(env: NodeJS.ProcessEnv = process.env): { host: string; port: number } {
  return parseHostPort("KINDLING_NBD_ADDRESS", env.KINDLING_NBD_ADDRESS || "127.0.0.1:10809");
}

/** A served export takes any client: only the connector's shape is checked. */
export function validateServedConnector(connector: Record<string, unknown>): void {
  if (connector.host !== undefined && typeof connector.host !== "string") throw new InvalidInputError("connector.host", "must be a string");
}

/** What a consumer needs to set up TLS with a server: the mode and the public half only. */
export interface NbdTlsAdvert {
  /** x509: the server has a certificate, the consumer trusts `caCertificate`; psk: pre-shared keys. */
  mode: "x509" | "psk";
  /** PEM of the certificate that vouches for the server's (its CA's, or its own when self-signed). */
  caCertificate?: string;
  /** The identity (user name) of the pre-shared key a consumer is given; the key itself never travels here. */
  pskIdentity?: string;
}

/** Where an NBD server serves exports for consumers, and how they reach it. */
export interface NbdEndpoint {
  host: string;
  port: number;
  tls?: NbdTlsAdvert;
  /** server: a running `kindling nbd serve` recorded it; default: no server has, this is KINDLING_NBD_ADDRESS or 127.0.0.1:10809. */
  source: "server" | "default";
}

/** The endpoint connection info names while no server has recorded one (and TLS as KINDLING_NBD_TLS says). */
export function defaultNbdEndpoint(env: NodeJS.ProcessEnv = process.env): NbdEndpoint {
  const value = env.KINDLING_NBD_TLS;
  if (value && value !== "off" && value !== "cert" && value !== "psk") throw new InvalidInputError("KINDLING_NBD_TLS", "must be off, cert or psk");
  const tls = value === "cert" ? { mode: "x509" as const } : value === "psk" ? { mode: "psk" as const } : undefined;
  return { ...nbdAddress(env), ...(tls ? { tls } : {}), source: "default" };
}

function uriHost(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/**
 * The address and TLS fields of an NBD export's connection info. `uri` is the plain
 * `nbd://HOST:PORT/EXPORT` that qemu (whose nbd driver knows no `nbds://`) and libnbd both take;
 * with TLS, qemu adds a `tls-creds` object made from `tls_mode` and `tls_ca_certificate` or
 * `tls_psk_identity`, and libnbd tools (nbdinfo, nbdcopy, nbdfuse) take `tls_uri`, `nbds://...`.
 */
export function nbdEndpointData(endpoint: NbdEndpoint, exportName: string): Record<string, unknown> {
  const path = `${uriHost(endpoint.host)}:${endpoint.port}/${encodeURIComponent(exportName)}`;
  const tls = endpoint.tls;
  return {
    host: endpoint.host,
    port: endpoint.port,
    export_name: exportName,
    uri: `nbd://${path}`,
    tls: tls !== undefined,
    ...(tls
      ? {
        tls_mode: tls.mode,
        tls_uri: `nbds://${path}`,
        ...(tls.caCertificate ? { tls_ca_certificate: tls.caCertificate } : {}),
        ...(tls.pskIdentity ? { tls_psk_identity: tls.pskIdentity } : {}),
      }
      : {}),
    address_source: endpoint.source,
  };
}

/** Connection info for an NBD export: export names are ids, never paths. */
export function servedConnectionInfo(protocol: string, exportName: string, attachMode: "rw" | "ro", qosSpecs: Record<string, string>, endpoint: NbdEndpoint): ConnectionInfo {
  return {
    driver_volume_type: protocol,
    data: {
      ...nbdEndpointData(endpoint, exportName),
      access_mode: attachMode,
      ...(Object.keys(qosSpecs).length ? { qos_specs: { ...qosSpecs } } : {}),
    },
  };
}

/** The URI libnbd tools take for this export (nbds:// under TLS); records written before `tls_uri` had it in `uri`. */
export function libnbdUri(data: Record<string, unknown>): string | undefined {
  const uri = data.tls_uri ?? data.uri;
  return typeof uri === "string" ? uri : undefined;
}
