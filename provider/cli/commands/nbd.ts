import { ExportDaemon } from "../../serve/nbd/daemon";
import { nbdAddress } from "../../attach/protocols";
import { certificateTls, pskTls } from "../../nbd/tls";
import { InvalidInputError } from "../../util/errors";
import type { Context } from "../context";

function parseListen(value: string | undefined): { host: string; port: number } {
  if (value === undefined) return nbdAddress();
  const match = /^(.+):(\d+)$/.exec(value);
  if (!match || Number(match[2]) > 65535) throw new InvalidInputError("--listen", `must be HOST:PORT, not ${JSON.stringify(value)}`);
  return { host: match[1].replace(/^\[(.*)\]$/, "$1"), port: Number(match[2]) };
}

/**
 * kindling nbd serve [--listen HOST:PORT] [--tls-cert F --tls-key F | --tls-psk F]: serves the exports recorded in persistence until
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
  const tls = v["tls-cert"] ? certificateTls(v["tls-cert"], v["tls-key"] as string) : v["tls-psk"] ? pskTls(v["tls-psk"]) : undefined;
  const daemon = new ExportDaemon(ctx.backends, { host, port, tls, staleMs: stale * 1000, pollMs: Math.min(1000, (stale * 1000) / 3) });
  const address = await daemon.start();
  ctx.out.result({ listening: `${address.host}:${address.port}`, exports: daemon.exportNames() }, () =>
    `serving NBD on ${address.host}:${address.port}: ${daemon.exportNames().join(", ") || "no exports yet"}`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
  await daemon.stop();
}
