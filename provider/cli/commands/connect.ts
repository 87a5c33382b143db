import { InvalidInputError, NotFoundError } from "../../util/errors";
import { Snapshot } from "../../library/snapshot";
import type { Volume } from "../../library/volume";
import { parseJsonObject, required } from "../args";
import { arg, type Context } from "../context";
import { fields } from "../output";

/** A volume by name or id, else a snapshot (snapshots can be exported over nbd). */
async function volumeOrSnapshot(ctx: Context, ref: string): Promise<Volume | Snapshot> {
  const backend = ctx.backend();
  try {
    return await backend.getVolume(ref);
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
    return backend.getSnapshot(ref).catch(() => Promise.reject(new NotFoundError("volume or snapshot", ref)));
  }
}

/** kindling connect VOL|SNAP --protocol P [--connector JSON] [--mode rw|ro]: prints connection info. */
export async function connect(ctx: Context): Promise<void> {
  const target = await volumeOrSnapshot(ctx, arg(ctx, 0, "VOL"));
  const protocol = required("--protocol", ctx.values.protocol);
  const connector = parseJsonObject("--connector", ctx.values.connector);
  const mode = ctx.values.mode ?? "rw";
  if (mode !== "rw" && mode !== "ro") throw new InvalidInputError("--mode", "must be rw or ro");
  const connection = target instanceof Snapshot ? await target.connect(protocol, connector) : await target.connect(protocol, connector, { attachMode: mode });
  // The record keeps secrets masked; a terminal, a CI log or a pasted transcript is no place for
  // a key either, so it is shown only when asked.
  const record = connection.dump();
  if (ctx.values["show-secrets"]) record.connectionInfo = connection.connectionInfo;
  ctx.out.result(record, () => fields({ connection: connection.id, protocol: connection.protocol, ...record.connectionInfo.data }));
}

/** kindling disconnect VOL|SNAP: ends every connection of it, detaching local devices. */
export async function disconnect(ctx: Context): Promise<void> {
  const target = await volumeOrSnapshot(ctx, arg(ctx, 0, "VOL"));
  const connections = await target.connections();
  await target.disconnect();
  ctx.out.result({ id: target.id, disconnected: connections.map((c) => c.id) }, () => `disconnected ${connections.length} connection(s) of ${target.name}`);
}

export async function validateConnector(ctx: Context): Promise<void> {
  const protocol = required("--protocol", ctx.values.protocol);
  const connector = parseJsonObject("--connector", required("--connector", ctx.values.connector));
  ctx.backend().validateConnector(protocol, connector);
  ctx.out.result({ protocol, valid: true }, () => `connector is valid for ${protocol}`);
}
