import { InvalidInputError } from "../../util/errors";
import { formatBytes } from "../../util/sizes";
import { arg, type Context } from "../context";
import { printable } from "../output";
import { progressBar } from "../progress";

/**
 * kindling volume download VOL FILE [--snapshot SNAP] [--force]: the volume (or one of its
 * snapshots) as a sparse raw image, as swiftnbd-ctl's download. Ctrl-C stops it and removes the
 * partial file; a second Ctrl-C kills at once.
 */
export async function volumeDownload(ctx: Context): Promise<void> {
  const backend = ctx.backend();
  const volume = await backend.getVolume(arg(ctx, 0, "VOL"));
  const file = arg(ctx, 1, "FILE");
  const snapshot = ctx.values.snapshot === undefined ? undefined : await backend.getSnapshot(ctx.values.snapshot);
  if (snapshot && snapshot.volumeId !== volume.id) {
    throw new InvalidInputError("--snapshot", `snapshot ${snapshot.name} is not a snapshot of volume ${volume.name}`, { hint: `list its snapshots with \`kindling snapshot list ${volume.name}\`` });
  }
  const controller = new AbortController();
  const stop = () => controller.abort();
  // Once: the first signal stops the copy cleanly; the next one gets Node's default (exit).
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  const bar = progressBar(`downloading ${printable(snapshot ? `snapshot ${snapshot.name}` : volume.name)}`);
  const opts = { force: ctx.values.force ?? false, onProgress: bar.onProgress, signal: controller.signal };
  let result;
  try {
    result = snapshot ? await snapshot.download(file, opts) : await volume.download(file, opts);
  } finally {
    bar.done();
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
  }
  const what = snapshot ? `snapshot ${snapshot.name} of volume ${volume.name}` : `volume ${volume.name}`;
  ctx.out.result(
    { ...result, volume: { id: volume.id, name: volume.name }, ...(snapshot ? { snapshot: { id: snapshot.id, name: snapshot.name } } : {}) },
    () => `downloaded ${what} to ${result.file}: ${formatBytes(result.bytes)}, ${formatBytes(result.dataBytes)} of data (the rest are holes)\nsha256 ${result.sha256}`,
  );
}
