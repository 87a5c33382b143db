import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { ExportDaemon } from "../../serve/nbd/daemon";
import { nbdAddress, parseHostPort, type NbdTlsAdvert } from "../../attach/protocols";
import { certificateTls, pskTls, type TlsSettings } from "../../nbd/tls";
import { InvalidInputError, errorMessage } from "../../util/errors";
import type { Context } from "../context";

function parseListen(value: string | undefined): { host: string; port: number } {
  return value === undefined ? nbdAddress() : parseHostPort("--listen", value);
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * The certificate consumers are told to trust: `--tls-ca`, else the last of the chain in
 * `--tls-cert` (its issuer when the file holds the chain, the certificate itself when it is
 * self-signed). Certificates are public; the key file is never read here.
 */
function caCertificate(caFile: string | undefined, certFile: string): string {
  const field = caFile ? "--tls-ca" : "--tls-cert";
  let text: string;
  try {
    text = readFileSync(caFile ?? certFile, "utf8");
  } catch (err) {
    throw new InvalidInputError(field, `cannot read ${caFile ?? certFile}: ${errorMessage(err)}`);
  }
  const certs = text.match(PEM_CERTIFICATE) ?? [];
  if (!certs.length) throw new InvalidInputError(field, `${caFile ?? certFile} holds no PEM certificate`);
  return `${(caFile ? certs : certs.slice(-1)).join("\n")}\n`;
}

/** What connection info says about TLS: the mode, the CA to trust, or the identity whose key the consumer must be given. */
function tlsAdvert(v: Context["values"], tls: TlsSettings | undefined): NbdTlsAdvert | undefined {
  if (!tls) return undefined;
  if (tls.psk) return { mode: "psk", pskIdentity: [...tls.psk.keys()][0] };
  return { mode: "x509", caCertificate: caCertificate(v["tls-ca"], v["tls-cert"] as string) };
}

/**
 * kindling nbd serve [--listen HOST:PORT] [--advertise HOST:PORT] [--tls-cert F --tls-key F [--tls-ca F] | --tls-psk F]:
 * serves the exports recorded in persistence until
 * SIGTERM or SIGINT, then drains in-flight requests, flushes, and gives back its writer locks
 * and export claims. An export whose connection is removed meanwhile is closed the same way.
 */
export async function nbdServe(ctx: Context): Promise<void> {
  const { host, port } = parseListen(ctx.values.listen);
  // A writer lock (or, from another host, an export claim) whose server stopped renewing it this
  // long ago counts as abandoned (a crash).
  const stale = Number(process.env.KINDLING_NBD_LOCK_STALE_SECONDS ?? 15);
  if (!(stale > 0)) throw new InvalidInputError("KINDLING_NBD_LOCK_STALE_SECONDS", "must be a positive number of seconds");
  const v = ctx.values;
  if ((v["tls-cert"] === undefined) !== (v["tls-key"] === undefined)) throw new InvalidInputError(v["tls-cert"] ? "--tls-key" : "--tls-cert", "give --tls-cert and --tls-key together");
  if (v["tls-cert"] && v["tls-psk"]) throw new InvalidInputError("--tls-psk", "give a certificate or pre-shared keys, not both");
  if (v["tls-ca"] && !v["tls-cert"]) throw new InvalidInputError("--tls-ca", "goes with --tls-cert");
  const tls = v["tls-cert"] ? certificateTls(v["tls-cert"], v["tls-key"] as string) : v["tls-psk"] ? pskTls(v["tls-psk"]) : undefined;
  // A wildcard means nothing to a consumer: without --advertise it is told this host's name.
  const wildcard = host === "0.0.0.0" || host === "::";
  const advertise = v.advertise !== undefined ? parseHostPort("--advertise", v.advertise) : wildcard ? { host: hostname(), port } : undefined;
  const daemon = new ExportDaemon(ctx.backends, { host, port, tls, advertise, tlsAdvert: tlsAdvert(v, tls), staleMs: stale * 1000, pollMs: Math.min(1000, (stale * 1000) / 3) });
  const address = await daemon.start();
  const told = advertise ? `${advertise.host}:${advertise.port}` : `${address.host}:${address.port}`;
  ctx.out.result({ listening: `${address.host}:${address.port}`, advertised: told, exports: daemon.exportNames() }, () =>
    `serving NBD on ${address.host}:${address.port}${advertise ? ` (consumers are told ${told})` : ""}: ${daemon.exportNames().join(", ") || "no exports yet"}`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
  await daemon.stop();
}
