import { InvalidInputError } from "../../util/errors";
import { parseJsonObject, required } from "../args";
import { arg, type Context } from "../context";
import { fields } from "../output";

/** kindling connect VOL --protocol P [--connector JSON] [--mode rw|ro]: prints connection info. */
export async function connect(ctx: Context): Promise<void> {
  const volume = await ctx.backend().getVolume(arg(ctx, 0, "VOL"));
  const protocol = required("--protocol", ctx.values.protocol);
  const connector = parseJsonObject("--connector", ctx.values.connector);
  const mode = ctx.values.mode ?? "rw";
  if (mode !== "rw" && mode !== "ro") throw new InvalidInputError("--mode", "must be rw or ro");
  const connection = await volume.connect(protocol, connector, { attachMode: mode });
  ctx.out.result(connection.dump(), () => fields({ connection: connection.id, protocol: connection.protocol, ...connection.connectionInfo.data }));
}

/** kindling disconnect VOL: ends every connection of the volume, detaching local devices. */
export async function disconnect(ctx: Context): Promise<void> {
  const volume = await ctx.backend().getVolume(arg(ctx, 0, "VOL"));
  const connections = await volume.connections();
  await volume.disconnect();
  ctx.out.result({ volumeId: volume.id, disconnected: connections.map((c) => c.id) }, () => `disconnected ${connections.length} connection(s) of ${volume.name}`);
}

export async function validateConnector(ctx: Context): Promise<void> {
  const protocol = required("--protocol", ctx.values.protocol);
  const connector = parseJsonObject("--connector", required("--connector", ctx.values.connector));
  ctx.backend().validateConnector(protocol, connector);
  ctx.out.result({ protocol, valid: true }, () => `connector is valid for ${protocol}`);
}
