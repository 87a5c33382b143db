import { imageSourceFor } from "../../library/images";
import type { Volume } from "../../library/volume";
import type { ImageProvenance } from "../../library";
import { InvalidInputError } from "../../util/errors";
import { parsePairs, parseSize } from "../args";
import { arg, type Context } from "../context";
import { NAME_COLUMN_WIDTH, fields, printable, table } from "../output";
import { progressBar } from "../progress";
import { writerText } from "./lock";
import { statusText } from "../status";

/**
 * Where a volume came from: a snapshot, a volume, an image. A clone of a volume that is not
 * listed (an image cache's cached volume, which no user sees) says the image instead.
 */
function sourceText(v: Volume, listed: Set<string>): string {
  if (v.snapshotId) return `snapshot ${v.snapshotId}`;
  if (v.sourceVolumeId && (listed.has(v.sourceVolumeId) || !v.image)) return `volume ${v.sourceVolumeId}`;
  return v.image ? `image ${imageText(v.image)}` : "";
}

function volumeRows(volumes: Volume[]) {
  const listed = new Set(volumes.map((v) => v.id));
  return table(
    ["NAME", "ID", "SIZE GiB", "STATUS", "POOL", "SOURCE"],
    volumes.map((v) => [v.name, v.id, v.sizeGiB, statusText(v), v.pool, sourceText(v, listed)]),
    { maxWidths: { NAME: NAME_COLUMN_WIDTH, POOL: NAME_COLUMN_WIDTH } },
  );
}

/** An image provenance in a few words: `glance:NAME (ID)`, a URL, `file:PATH`. */
function imageText(p: ImageProvenance): string {
  if (p.kind === "glance") return `${p.service}:${p.imageName ?? p.imageId}${p.imageName ? ` (${p.imageId})` : ""}`;
  return p.kind === "file" ? `file:${p.location}` : (p.location ?? "");
}

/** kindling volume create NAME --size GIB [--pool P] [--from-snapshot S | --from-volume V | --image REF] ... */
export async function volumeCreate(ctx: Context): Promise<void> {
  const backend = ctx.backend();
  const name = arg(ctx, 0, "NAME");
  const v = ctx.values;
  if (v["from-snapshot"] !== undefined && v["from-volume"] !== undefined) {
    throw new InvalidInputError("--from-snapshot", "give at most one of --from-snapshot and --from-volume");
  }
  if (v.image !== undefined && (v["from-snapshot"] !== undefined || v["from-volume"] !== undefined)) {
    throw new InvalidInputError("--image", "give one of --image, --from-snapshot and --from-volume");
  }
  const fromCopy = v["from-snapshot"] !== undefined || v["from-volume"] !== undefined || v.image !== undefined;
  // A copy defaults to its source's size (an image: what it needs); a new volume must say how big it is.
  const sizeGiB = v.size === undefined && fromCopy ? undefined : parseSize("--size", v.size);
  const extraSpecs = parsePairs("--spec", v.spec);
  const qosSpecs = parsePairs("--qos", v.qos);
  const metadata = parsePairs("--meta", v.meta);
  const bar = progressBar(`creating ${printable(name)}`);
  let volume: Volume;
  try {
    if (v["from-snapshot"] !== undefined) {
      if (v.pool || v.spec?.length || v.qos?.length) throw new InvalidInputError("--from-snapshot", "a volume from a snapshot takes its pool and specs from the snapshot's volume");
      const snapshot = await backend.getSnapshot(v["from-snapshot"]);
      volume = await snapshot.createVolume({ name, sizeGiB, description: v.description, metadata: v.meta ? metadata : undefined }, bar);
    } else if (v["from-volume"] !== undefined) {
      if (v.pool || v.spec?.length || v.qos?.length) throw new InvalidInputError("--from-volume", "a clone takes its pool and specs from its source");
      const source = await backend.getVolume(v["from-volume"]);
      volume = await source.clone({ name, sizeGiB, description: v.description, metadata: v.meta ? metadata : undefined }, bar);
    } else if (v.image !== undefined) {
      const source = await imageSourceFor(v.image, ctx.images(), { sha256: v.sha256, sha512: v.sha512 }, "--image");
      // The first SIGINT or SIGTERM stops the copy cleanly (no volume, no staging file); a second gets Node's default.
      const controller = new AbortController();
      const stop = () => controller.abort();
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
      try {
        volume = await backend.createVolumeFromImage(source, { name, sizeGiB, pool: v.pool, description: v.description, extraSpecs, qosSpecs, metadata, allowUnverified: v["allow-unverified"] }, { onProgress: bar.onProgress, signal: controller.signal, imageCache: !v["no-cache"] });
      } finally {
        process.off("SIGINT", stop);
        process.off("SIGTERM", stop);
      }
    } else {
      volume = await backend.createVolume({ name, sizeGiB: sizeGiB as number, pool: v.pool, description: v.description, extraSpecs, qosSpecs, metadata });
    }
  } finally {
    bar.done();
  }
  ctx.out.result(volume.dump(), () => `created volume ${volume.name} (${volume.id}), ${volume.sizeGiB} GiB in pool ${volume.pool}`);
}

export async function volumeList(ctx: Context): Promise<void> {
  const volumes = await ctx.backend().volumes();
  ctx.out.result(volumes.map((v) => v.dump()), () => (volumes.length ? volumeRows(volumes) : "no volumes"));
}

/**
 * Shows the record with the volume's snapshots and connections, and what holds it now; with
 * --refresh also what the backend really holds (the records alone never wait on the storage).
 */
export async function volumeShow(ctx: Context): Promise<void> {
  const volume = await ctx.backend().getVolume(arg(ctx, 0, "VOL"));
  const actual = ctx.values.refresh ? await volume.inspect() : undefined;
  const snapshots = (await volume.snapshots()).map((s) => ({ id: s.id, name: s.name, status: s.status }));
  const connections = (await volume.connections()).map((c) => ({ id: c.id, protocol: c.protocol, devicePath: c.devicePath, attachMode: c.attachMode }));
  const writerLock = await volume.writer();
  const value = { ...volume.dump(), busy: volume.busy, actual, snapshots, connections, writerLock: writerLock ?? null };
  const { lease: _lease, ...record } = volume.dump();
  ctx.out.result(value, () => fields({
    ...record, status: statusText(volume), actual, snapshots: snapshots.map((s) => s.name), connections,
    "writer lock": writerLock ? writerText(writerLock) : undefined,
  }));
}

export async function volumeDelete(ctx: Context): Promise<void> {
  const volume = await ctx.backend().getVolume(arg(ctx, 0, "VOL"));
  await volume.delete();
  ctx.out.result({ id: volume.id, name: volume.name, status: volume.status }, () => `deleted volume ${volume.name}`);
}

export async function volumeExtend(ctx: Context): Promise<void> {
  const volume = await ctx.backend().getVolume(arg(ctx, 0, "VOL"));
  const size = parseSize("--size", ctx.values.size);
  await volume.extend(size);
  const expansion = await volume.expansion();
  ctx.out.result({ ...volume.dump(), expansion }, () => [
    `volume ${volume.name} is now ${volume.sizeGiB} GiB (${expansion.sizeBytes} bytes)`,
    ...expansion.connections.map((c) => `  ${c.protocol} connection ${c.connectionId}: ${c.consumerAction}: ${c.detail}`),
  ].join("\n"));
}

export async function volumeClone(ctx: Context): Promise<void> {
  const source = await ctx.backend().getVolume(arg(ctx, 0, "VOL"));
  const name = arg(ctx, 1, "NAME");
  const sizeGiB = ctx.values.size === undefined ? undefined : parseSize("--size", ctx.values.size);
  const bar = progressBar(`cloning ${printable(source.name)}`);
  let clone: Volume;
  try {
    clone = await source.clone({ name, sizeGiB, description: ctx.values.description }, bar);
  } finally {
    bar.done();
  }
  ctx.out.result(clone.dump(), () => `cloned ${source.name} to ${clone.name} (${clone.id}), ${clone.sizeGiB} GiB`);
}
