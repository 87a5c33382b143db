import type { Readable } from "node:stream";
import { ConflictError, InvalidInputError } from "../../util/errors";
import type { ImageRecord, ImageService } from "../contract";
import { conflicting, hexDigest, type Digest, type DigestAlgo } from "../digest";
import type { ImageSource, SourceDescription } from "./source";

// An image of an image service (Glance) as a source of bytes. Everything the service vouches
// for is checked: its secure hash (os_hash_value, by os_hash_algo) and its md5 (checksum),
// with the user's own digests beside them. Only an active image has data.

const CHECKED: ReadonlySet<string> = new Set<DigestAlgo>(["md5", "sha256", "sha512"]);

export class GlanceSource implements ImageSource {
  constructor(
    private readonly service: ImageService,
    private readonly image: ImageRecord,
    /** The user's digests (`--sha256`), checked as well as the service's. */
    private readonly given: Digest[] = [],
    private readonly field = "image",
  ) {}

  private get where(): string {
    return `${this.service.name}:${this.image.id}`;
  }

  async describe(): Promise<SourceDescription> {
    // Read again: the record the caller found may be older than the image is now.
    const i = await this.service.show(this.image.id);
    const named = i.name ? `image ${i.name} (${i.id}) of ${this.service.name}` : `image ${i.id} of ${this.service.name}`;
    if (i.status !== "active") throw new InvalidInputError(this.field, `${named} is ${i.status}, not active: it has no data to copy`);
    const vouched: Digest[] = [];
    if (i.hash && CHECKED.has(i.hash.algo)) vouched.push(hexDigest(i.hash.algo as DigestAlgo, i.hash.value, `${this.service.name}'s os_hash_value`, this.field));
    if (i.checksum) vouched.push(hexDigest("md5", i.checksum, `${this.service.name}'s checksum`, this.field));
    const expect = [...this.given, ...vouched];
    const clash = conflicting(expect);
    if (clash) throw new ConflictError(`${named}: ${clash[0].from} says its ${clash[0].algo} is ${clash[0].value}, ${clash[1].from} says ${clash[1].value}`, { field: this.field });
    // The strongest digest names the bytes (what the image cache keys on), whoever gave it.
    const strongest = [...expect].sort((a, b) => rank(b.algo) - rank(a.algo))[0];
    const locations = [...new Set([i.directUrl, ...(i.locations ?? []).map((l) => l.url)].filter((u): u is string => typeof u === "string" && u !== ""))];
    return {
      identity: strongest ? `${strongest.algo}:${strongest.value}` : undefined,
      declaredFormat: i.diskFormat,
      sizeBytes: i.sizeBytes,
      minDiskGiB: i.minDiskGiB,
      virtualSizeHint: i.virtualSizeBytes,
      expect,
      rangeable: true,
      ...(locations.length ? { locations } : {}),
      where: this.where,
      origin: {
        kind: "glance", service: this.service.name, imageId: i.id, imageName: i.name, containerFormat: i.containerFormat, minRamMiB: i.minRamMiB, properties: { ...i.properties },
      },
    };
  }

  async open(opts: { offset?: number; signal?: AbortSignal } = {}): Promise<Readable> {
    return (await this.service.download(this.image.id, { offset: opts.offset, signal: opts.signal })).body;
  }
}

const rank = (algo: DigestAlgo) => (algo === "sha512" ? 3 : algo === "sha256" ? 2 : 1);
