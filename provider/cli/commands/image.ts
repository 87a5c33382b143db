import type { ImageRecord, UploadResult } from "../../images/contract";
import { copySourceToImage, imageSourceFor } from "../../library/images";
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

/**
 * An image of a volume (through a temporary snapshot) or of a snapshot, in any format (raw
 * streamed), or of a local file or a URL (every digest checked, the format read from the
 * content).
 */
export async function imageCreate(ctx: Context): Promise<void> {
  const name = arg(ctx, 0, "NAME");
  const v = ctx.values;
  const given = (["from-volume", "from-snapshot", "file", "url"] as const).filter((k) => v[k] !== undefined);
  if (given.length !== 1) throw new InvalidInputError("--from-volume", "give exactly one of --from-volume VOL, --from-snapshot SNAP, --file PATH or --url URL");
  const from = given[0];
  const service = ctx.images().get(v.service, "--service");
  const properties = v.meta ? parsePairs("--meta", v.meta) : undefined;
  let made: UploadResult;
  let sourceName: string;
  if (from === "file" || from === "url") {
    if (v.compress) throw new InvalidInputError("--compress", "applies to an image of a volume or a snapshot; a file or URL is uploaded as it is");
    const ref = from === "file" ? `file:${v.file}` : (v.url as string);
    if (from === "url" && !/^https?:/i.test(ref)) throw new InvalidInputError("--url", "must be an http(s) URL");
    const source = await imageSourceFor(ref, ctx.images(), { sha256: v.sha256, sha512: v.sha512 }, `--${from}`);
    sourceName = from === "file" ? (v.file as string) : ref;
    const bar = progressBar(`image ${printable(name)}`);
    try {
      made = await copySourceToImage(source, service, { name, properties, diskFormat: diskFormat(v["disk-format"], sourceFormats), allowUnverified: v["allow-unverified"] }, bar.onProgress).catch(asFlags);
    } finally {
      bar.done();
    }
  } else {
    for (const flag of ["sha256", "sha512", "allow-unverified"] as const) {
      if (v[flag] !== undefined) throw new InvalidInputError(`--${flag}`, "applies to --file and --url: a volume's or snapshot's bytes are read from the storage itself");
    }
    const backend = ctx.backend();
    const source = from === "from-volume" ? await backend.getVolume(v["from-volume"] as string) : await backend.getSnapshot(v["from-snapshot"] as string);
    sourceName = source.name;
    const bar = progressBar(`image ${printable(name)} of ${printable(source.name)}`);
    try {
      made = await source.copyToImage(service, { name, properties, diskFormat: diskFormat(v["disk-format"], storageFormats), compress: v.compress }, bar).catch(asFlags);
    } finally {
      bar.done();
    }
  }
  ctx.out.result({ service: service.name, ...made.image, sentBytes: made.sentBytes, md5: made.md5, hash: made.hash }, () =>
    `created ${made.image.diskFormat ?? ""} image ${made.image.name ?? ""} (${made.image.id}) in ${service.name} from ${printable(sourceName)}: ${made.sentBytes} bytes, ${made.hash.algo} ${made.hash.value.slice(0, 16)}...`);
}

const storageFormats = ["raw", "qcow2", "vmdk", "vhdx", "vdi"] as const;
const sourceFormats = ["raw", "iso", "qcow2", "vmdk", "vhd", "vhdx", "vdi"] as const;

/** The library's option names in its errors, as the flags the user typed. */
const FLAGS: Record<string, string> = { diskFormat: "--disk-format", compress: "--compress" };

function asFlags(err: unknown): never {
  if (err instanceof InvalidInputError && err.field && FLAGS[err.field]) throw new InvalidInputError(FLAGS[err.field], err.rule, { hint: err.hint });
  throw err;
}

/** --disk-format, checked here so the error names the flag. */
function diskFormat<F extends string>(value: string | undefined, allowed: readonly F[]): F | undefined {
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value)) throw new InvalidInputError("--disk-format", `must be one of ${allowed.join(", ")}, not ${JSON.stringify(value.slice(0, 40))}`);
  return value as F;
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
