import type { ImageRecord } from "../../images/contract";
import { arg, type Context } from "../context";
import { NAME_COLUMN_WIDTH, fields, table } from "../output";

// kindling image list | show | delete: the images of a configured image service (Glance).

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
