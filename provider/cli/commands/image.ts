import type { ImageRecord, UploadResult } from "../../images/contract";
import { InvalidInputError } from "../../util/errors";
import { parsePairs } from "../args";
import { arg, type Context } from "../context";
import { NAME_COLUMN_WIDTH, fields, printable, table } from "../output";
import { progressBar } from "../progress";

// kindling image list | show | create | delete: the images of a configured image service (Glance).

const sizeText = (bytes?: number) => (bytes === undefined ? "-" : bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(1)} GiB` : `${(bytes / 1024 ** 2).toFixed(1)} MiB`);

export async function imageList(ctx: Context): Promise<void> {
  const service = ctx.images().get(ctx.values.service, "--service");
  const images = await service.find({});
  ctx.out.result(images, () =>
    images.length
      ? table(["NAME", "ID", "STATUS", "FORMAT", "SIZE", "CREATED"], images.map((i) => [i.name ?? "", i.id, i.status, i.diskFormat ?? "-", sizeText(i.sizeBytes), i.createdAt]), { maxWidths: { NAME: NAME_COLUMN_WIDTH } })
      : `no images in ${service.name}`);
}

export async function imageShow(ctx: Context): Promise<void> {
  const { service, image } = await ctx.images().resolve(arg(ctx, 0, "IMAGE"));
  ctx.out.result({ service: service.name, ...image }, () => fields({ service: service.name, ...shown(image) }));
}

/** A raw image of a volume (through a temporary snapshot) or of a snapshot, streamed. */
export async function imageCreate(ctx: Context): Promise<void> {
  const name = arg(ctx, 0, "NAME");
  const v = ctx.values;
  if ((v["from-volume"] === undefined) === (v["from-snapshot"] === undefined)) throw new InvalidInputError("--from-volume", "give exactly one of --from-volume VOL or --from-snapshot SNAP");
  const service = ctx.images().get(v.service, "--service");
  const options = { name, properties: v.meta ? parsePairs("--meta", v.meta) : undefined };
  const backend = ctx.backend();
  const source = v["from-volume"] !== undefined ? await backend.getVolume(v["from-volume"]) : await backend.getSnapshot(v["from-snapshot"] as string);
  const bar = progressBar(`image ${printable(name)} of ${printable(source.name)}`);
  let made: UploadResult;
  try {
    made = await source.copyToImage(service, options, bar);
  } finally {
    bar.done();
  }
  ctx.out.result({ service: service.name, ...made.image, sentBytes: made.sentBytes, md5: made.md5, hash: made.hash }, () =>
    `created image ${made.image.name ?? ""} (${made.image.id}) in ${service.name} from ${source.name}: ${made.sentBytes} bytes, ${made.hash.algo} ${made.hash.value.slice(0, 16)}...`);
}

/** A name several images carry is refused: a delete names one image. */
export async function imageDelete(ctx: Context): Promise<void> {
  const { service, image } = await ctx.images().resolve(arg(ctx, 0, "IMAGE"), { unique: true });
  await service.delete(image.id);
  ctx.out.result({ service: service.name, id: image.id, name: image.name, deleted: true }, () => `deleted image ${image.name ?? image.id} (${image.id}) from ${service.name}`);
}

function shown(i: ImageRecord): Record<string, unknown> {
  return {
    name: i.name, id: i.id, status: i.status, diskFormat: i.diskFormat, containerFormat: i.containerFormat, size: sizeText(i.sizeBytes),
    virtualSize: i.virtualSizeBytes === undefined ? undefined : sizeText(i.virtualSizeBytes), checksum: i.checksum, hash: i.hash ? `${i.hash.algo}:${i.hash.value}` : undefined,
    minDiskGiB: i.minDiskGiB, visibility: i.visibility, protected: i.protected, tags: i.tags.join(", ") || undefined,
    properties: Object.keys(i.properties).length ? i.properties : undefined, createdAt: i.createdAt, updatedAt: i.updatedAt,
  };
}
