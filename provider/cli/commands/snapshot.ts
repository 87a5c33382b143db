import type { Snapshot } from "../../library/snapshot";
import { arg, type Context } from "../context";
import { NAME_COLUMN_WIDTH, fields, printable, table } from "../output";
import { statusText } from "../status";
import { progressBar } from "../progress";

export async function snapshotCreate(ctx: Context): Promise<void> {
  const volume = await ctx.backend().getVolume(arg(ctx, 0, "VOL"));
  const name = arg(ctx, 1, "NAME");
  const bar = progressBar(`snapshot of ${printable(volume.name)}`);
  let snapshot: Snapshot;
  try {
    snapshot = await volume.createSnapshot({ name, description: ctx.values.description }, bar);
  } finally {
    bar.done();
  }
  ctx.out.result(snapshot.dump(), () => `created snapshot ${snapshot.name} (${snapshot.id}) of ${volume.name}`);
}

export async function snapshotList(ctx: Context): Promise<void> {
  const backend = ctx.backend();
  const volumeId = ctx.args[0] === undefined ? undefined : (await backend.getVolume(ctx.args[0])).id;
  const snapshots = await backend.snapshots(volumeId);
  ctx.out.result(snapshots.map((s) => s.dump()), () =>
    snapshots.length
      ? table(["NAME", "ID", "VOLUME", "SIZE GiB", "STATUS", "CREATED"], snapshots.map((s) => [s.name, s.id, s.volumeId, s.volumeSizeGiB, statusText(s), s.createdAt]), { maxWidths: { NAME: NAME_COLUMN_WIDTH } })
      : "no snapshots");
}

/** The record and what holds it now; with --refresh also what the backend really holds. */
export async function snapshotShow(ctx: Context): Promise<void> {
  const snapshot = await ctx.backend().getSnapshot(arg(ctx, 0, "SNAP"));
  const actual = ctx.values.refresh ? await snapshot.inspect() : undefined;
  const { lease: _lease, ...record } = snapshot.dump();
  ctx.out.result({ ...snapshot.dump(), busy: snapshot.busy, actual }, () => fields({ ...record, status: statusText(snapshot), actual }));
}

export async function snapshotDelete(ctx: Context): Promise<void> {
  const snapshot = await ctx.backend().getSnapshot(arg(ctx, 0, "SNAP"));
  await snapshot.delete();
  ctx.out.result({ id: snapshot.id, name: snapshot.name, status: snapshot.status }, () => `deleted snapshot ${snapshot.name}`);
}
