import { arg, type Context } from "../context";

/** kindling attach VOL: a block device on this host; prints its path. */
export async function attach(ctx: Context): Promise<void> {
  const volume = await ctx.backend().getVolume(arg(ctx, 0, "VOL"));
  const connection = await volume.attach({ readOnly: ctx.values["read-only"] ?? false });
  ctx.out.result(
    { devicePath: connection.devicePath, connectionId: connection.id, volumeId: volume.id, attachMode: connection.attachMode },
    () => connection.devicePath as string,
  );
}

export async function detach(ctx: Context): Promise<void> {
  const volume = await ctx.backend().getVolume(arg(ctx, 0, "VOL"));
  await volume.detach();
  ctx.out.result({ volumeId: volume.id, detached: true }, () => `detached ${volume.name}`);
}
