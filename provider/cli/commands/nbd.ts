import { ExportDaemon } from "../../exports/nbd/daemon";
import { nbdAddress } from "../../exports/protocols";
import { InvalidInputError } from "../../util/errors";
import type { Context } from "../context";

function parseListen(value: string | undefined): { host: string; port: number } {
  if (value === undefined) return nbdAddress();
  const match = /^(.+):(\d+)$/.exec(value);
  if (!match || Number(match[2]) > 65535) throw new InvalidInputError("--listen", `must be HOST:PORT, not ${JSON.stringify(value)}`);
  return { host: match[1].replace(/^\[(.*)\]$/, "$1"), port: Number(match[2]) };
}

/**
 * kindling nbd serve [--listen HOST:PORT]: serves the exports recorded in persistence until
 * SIGTERM or SIGINT, then drains in-flight requests, flushes and releases its locks.
 */
export async function nbdServe(ctx: Context): Promise<void> {
  const { host, port } = parseListen(ctx.values.listen);
  // A writer lock whose server stopped renewing it this long ago is taken over (a crash).
  const stale = Number(process.env.KINDLING_NBD_LOCK_STALE_SECONDS ?? 15);
  if (!(stale > 0)) throw new InvalidInputError("KINDLING_NBD_LOCK_STALE_SECONDS", "must be a positive number of seconds");
  const daemon = new ExportDaemon(ctx.backends, { host, port, staleMs: stale * 1000, pollMs: Math.min(1000, (stale * 1000) / 3) });
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
