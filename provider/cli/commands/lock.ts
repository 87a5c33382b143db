import type { WriterHolder } from "../../library/export-claims";
import { arg, type Context } from "../context";
import { printable } from "../output";

/** The writer lock's holder as `show` and the lock commands print it. */
export function writerText(holder: WriterHolder): string {
  return holder.live ? holder.description : `${holder.description} (gone: anyone may take it over)`;
}

/**
 * kindling volume lock VOL: takes the volume's writer lock by hand (swiftnbd-ctl's lock). Until
 * `volume unlock`, `nbd serve` does not export it read-write and downloads and deletes are refused.
 */
export async function volumeLock(ctx: Context): Promise<void> {
  const volume = await ctx.backend().getVolume(arg(ctx, 0, "VOL"));
  const holder = await volume.lock();
  ctx.out.result({ id: volume.id, name: volume.name, writerLock: holder }, () => `locked volume ${volume.name}: ${writerText(holder)}`);
}

/**
 * kindling volume unlock VOL [--force]: releases a lock held by hand (swiftnbd-ctl's unlock).
 * A live NBD daemon's lock only with --force, which says on stderr what it took away.
 */
export async function volumeUnlock(ctx: Context): Promise<void> {
  const volume = await ctx.backend().getVolume(arg(ctx, 0, "VOL"));
  const force = ctx.values.force ?? false;
  const released = await volume.unlock({ force });
  const holder = released.holder;
  if (force && released.locked) {
    const live = holder?.kind === "process" && holder.live;
    process.stderr.write(`${printable(`kindling: warning: released the writer lock of volume ${volume.name} held by ${holder ? writerText(holder) : "an unreadable holder"}`
      + (live ? "; that process still runs, and takes the lock back at its next renewal unless another writer takes it first" : ""))}\n`);
  }
  ctx.out.result({ id: volume.id, name: volume.name, released: released.locked, ...(holder ? { holder } : {}) }, () =>
    !released.locked ? `volume ${volume.name} was not locked` : `unlocked volume ${volume.name}${holder ? ` (held by ${writerText(holder)})` : " (its lock could not be read)"}`);
}
