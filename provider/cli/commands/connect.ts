import { InvalidInputError, NotFoundError } from "../../util/errors";
import { Snapshot } from "../../library/snapshot";
import type { Volume } from "../../library/volume";
import { parseJsonObject, required } from "../args";
import { arg, type Context } from "../context";
import { fields } from "../output";
import { checkLibvirtDisk, libvirtDiskXml, libvirtSecretXml } from "../../library/libvirt-xml";

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

/**
 * kindling connect VOL|SNAP --protocol P [--connector JSON] [--mode rw|ro] [--format F]: prints
 * connection info (info), the libvirt <disk> for it (libvirt), or the <secret> an rbd disk's key
 * goes in (libvirt-secret).
 */
export async function connect(ctx: Context): Promise<void> {
  const target = await volumeOrSnapshot(ctx, arg(ctx, 0, "VOL"));
  const protocol = required("--protocol", ctx.values.protocol);
  const connector = parseJsonObject("--connector", ctx.values.connector);
  const mode = ctx.values.mode ?? "rw";
  if (mode !== "rw" && mode !== "ro") throw new InvalidInputError("--mode", "must be rw or ro");
  const format = ctx.values.format ?? "info";
  if (!["info", "libvirt", "libvirt-secret"].includes(format)) throw new InvalidInputError("--format", "must be info, libvirt or libvirt-secret");
  if (format !== "info") checkLibvirtDisk(protocol, ctx.values.target);
  if (format === "libvirt-secret" && protocol !== "rbd") throw new InvalidInputError("--format", `a ${protocol} disk needs no libvirt secret; only rbd disks have one`);
  const connection = target instanceof Snapshot ? await target.connect(protocol, connector) : await target.connect(protocol, connector, { attachMode: mode });
  // The record keeps secrets masked; a terminal, a CI log or a pasted transcript is no place for
  // a key either, so it is shown only when asked.
  const record = connection.dump();
  record.connectionInfo = await connection.currentInfo({ secrets: Boolean(ctx.values["show-secrets"]) });
  if (format === "info") {
    ctx.out.result(record, () => fields({ connection: connection.id, protocol: connection.protocol, ...record.connectionInfo.data }));
    return;
  }
  // The XML holds no secret: an rbd disk names the libvirt secret its key goes in.
  const disk = libvirtDiskXml(record.connectionInfo, { target: ctx.values.target });
  const secret = libvirtSecretXml(record.connectionInfo);
  if (format === "libvirt-secret" && !secret) throw new InvalidInputError("--format", `a ${protocol} disk needs no libvirt secret (auth is off; the connection ${connection.id} was made)`);
  // --json gives the connection info too (its key with --show-secrets): the secret's value and
  // the XML naming it must come from the same connection, which one command makes.
  ctx.out.result({ connection: connection.id, connectionInfo: record.connectionInfo, disk, ...(secret ? { secret } : {}) }, () => (format === "libvirt" ? disk : (secret as string)).trimEnd());
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
