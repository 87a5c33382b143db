import { createHash, type Hash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { Transform, type Readable, type TransformCallback } from "node:stream";
import { BackendError, ConflictError, InvalidInputError } from "../../util/errors";
import type {
  Download,
  DownloadOptions,
  ImageLocation,
  ImageQuery,
  ImageRecord,
  ImageService,
  ImageServiceCapabilities,
  ImageUpdate,
  NewImage,
  UploadOptions,
  UploadResult,
} from "../contract";
import type { GlanceSettings } from "./config";
import { glanceError } from "./errors";
import { GlanceHttp, readText, type GlanceRequest } from "./http";
import { isReservedField, toImageRecord, toLocation } from "./record";

// kindling's ImageService on a Glance v2 API (zed and later), without python-glanceclient's
// habits: what an upload sent is hashed on the way and checked against what Glance recorded
// (an empty or cut-short body otherwise becomes an `active` image), downloads resume with
// Range, and a delete of what is gone already succeeds.

const JSON_PATCH = "application/openstack-images-v2.1-json-patch";
/** Glance's image ids are UUIDs; anything else would only be a 404, or a path of our making. */
const IMAGE_ID = /^[A-Za-z0-9-]{1,64}$/;
/** Glance's own default page is 25; its api_limit_max is 1000. */
const PAGE_SIZE = 200;
/** Query parameters of Glance's list call: a property of one of these names is matched here only. */
const LIST_PARAMETERS = new Set(["name", "status", "visibility", "tag", "limit", "marker", "sort", "sort_key", "sort_dir", "member_status", "owner", "size_min", "size_max", "os_hidden", "protected", "id", "created_at", "updated_at", "container_format", "disk_format", "checksum", "os_hash_value"]);

export class GlanceImageService implements ImageService {
  private readonly http: GlanceHttp;
  private readonly pageSize: number;

  constructor(
    readonly name: string,
    settings: GlanceSettings,
    opts: { pageSize?: number } = {},
  ) {
    this.http = new GlanceHttp(settings);
    this.pageSize = opts.pageSize ?? PAGE_SIZE;
  }

  get endpoint(): string {
    return this.http.endpoint;
  }

  async capabilities(): Promise<ImageServiceCapabilities> {
    // GET /versions answers 200, the root 300 (Multiple Choices): both list the versions.
    const versions = await this.json({ method: "GET", path: "/versions" }, [200, 300]);
    const ids = ((versions as { versions?: Array<{ id?: unknown }> }).versions ?? [])
      .map((v) => /^v(2)\.(\d+)$/.exec(String(v.id)))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[2]));
    if (ids.length === 0) throw new BackendError(`the service at ${this.endpoint} offers no Glance v2 API`, { hint: "check imageServices endpoint: it is Glance's root, such as http://127.0.0.1:9292" });
    const minor = Math.max(...ids);
    const imports = await this.optionalJson({ method: "GET", path: "/v2/info/import" });
    const stores = await this.optionalJson({ method: "GET", path: "/v2/info/stores" });
    return {
      apiVersion: `2.${minor}`,
      importMethods: ((imports as { "import-methods"?: { value?: unknown[] } } | undefined)?.["import-methods"]?.value ?? []).map(String),
      stores: ((stores as { stores?: Array<{ id?: unknown }> } | undefined)?.stores ?? []).map((s) => String(s.id)),
      // The locations call came with 2.17 (2024.2).
      locations: minor >= 17 ? "api" : "record",
    };
  }

  async show(id: string): Promise<ImageRecord> {
    return toImageRecord(await this.json({ method: "GET", path: imagePath(id) }, [200], id));
  }

  async find(query: ImageQuery): Promise<ImageRecord[]> {
    const limit = query.limit ?? Infinity;
    if (!(limit >= 1)) throw new InvalidInputError("limit", "must be at least 1");
    const params = new URLSearchParams();
    if (query.name !== undefined) params.set("name", query.name);
    for (const tag of query.tags ?? []) params.append("tag", tag);
    if (query.status) params.set("status", query.status);
    if (query.visibility) params.set("visibility", query.visibility);
    if (query.hidden) params.set("os_hidden", "true");
    // Any other parameter is a property filter to Glance (hence `fields=` finding nothing).
    for (const [key, value] of Object.entries(query.properties ?? {})) if (!LIST_PARAMETERS.has(key) && !isReservedField(key)) params.set(key, value);
    params.set("sort_key", "created_at");
    params.set("sort_dir", "desc");
    params.set("limit", String(Math.min(this.pageSize, limit)));

    const found: ImageRecord[] = [];
    let path: string | undefined = `/v2/images?${params}`;
    // A full last page still has `next`; the page after it is empty and has none.
    while (path !== undefined && found.length < limit) {
      const page = (await this.json({ method: "GET", path }, [200])) as { images?: unknown[]; next?: unknown };
      const images = (page.images ?? []).map((i) => toImageRecord(i as Record<string, unknown>));
      found.push(...images.filter((image) => matches(image, query)));
      path = images.length > 0 && typeof page.next === "string" && page.next.startsWith("/v2/images?") ? page.next : undefined;
    }
    // Glance sorted by its microsecond timestamps; a stable sort on the shown seconds keeps that order in a tie.
    return found.sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0)).slice(0, limit);
  }

  async create(image: NewImage): Promise<ImageRecord> {
    if (typeof image.name !== "string" || image.name.length === 0 || image.name.length > 255) throw new InvalidInputError("name", "must be 1-255 characters");
    const body: Record<string, unknown> = {
      name: image.name,
      disk_format: image.diskFormat,
      container_format: image.containerFormat ?? "bare",
    };
    if (image.visibility !== undefined) body.visibility = image.visibility;
    if (image.protected !== undefined) body.protected = image.protected;
    if (image.minDiskGiB !== undefined) body.min_disk = image.minDiskGiB;
    if (image.minRamMiB !== undefined) body.min_ram = image.minRamMiB;
    if (image.tags !== undefined) body.tags = image.tags;
    for (const [key, value] of Object.entries(image.properties ?? {})) {
      checkProperty(`properties.${key}`, key);
      if (typeof value !== "string") throw new InvalidInputError(`properties.${key}`, "must be a string (Glance keeps properties as strings)");
      body[key] = value;
    }
    const created = await this.json({ method: "POST", path: "/v2/images", headers: { "content-type": "application/json" }, body: Buffer.from(JSON.stringify(body)) }, [201]);
    return toImageRecord(created);
  }

  async upload(id: string, body: Readable, opts: UploadOptions = {}): Promise<UploadResult> {
    const path = `${imagePath(id)}/file`;
    const what = this.http.what("PUT", path);
    const hashing = new HashingStream();
    const headers: Record<string, string> = { "content-type": "application/octet-stream" };
    // Glance 31.0 and later refuse a body of another length; older ones ignore it (and are checked below).
    if (opts.sizeBytes !== undefined) headers["x-openstack-image-size"] = String(opts.sizeBytes);
    body.on("error", (err) => hashing.destroy(err));
    let res: IncomingMessage;
    try {
      res = await this.http.request({ method: "PUT", path, headers, body: body.pipe(hashing), signal: opts.signal });
    } catch (err) {
      // Glance notices the cut connection a moment later, and only then puts the image back to
      // queued: wait for that, so that the caller can retry on the same image once this settles.
      await this.settleAbortedUpload(id);
      if (err instanceof BackendError) throw err;
      throw new BackendError(`the upload of Glance image "${id}" to ${this.endpoint} stopped after ${hashing.bytes} bytes: ${(err as Error).message}`, {
        cause: err,
        hint: "Glance dropped what it had received; the image takes its data again",
      });
    }
    const text = await readText(res, what);
    if (res.statusCode !== 204 && res.statusCode !== 200) {
      throw glanceError(what, { status: res.statusCode ?? 0, body: text }, { endpoint: this.endpoint, subject: { kind: "Glance image", key: id }, sizeBytes: opts.sizeBytes ?? hashing.bytes });
    }
    if (!hashing.writableFinished) throw new BackendError(`${what} answered ${res.statusCode} before all the data was sent (${hashing.bytes} bytes)`);
    const sent = { sentBytes: hashing.bytes, md5: hashing.md5.digest("hex"), hash: { algo: "sha512", value: hashing.sha512.digest("hex") } };
    const image = await this.show(id);
    const wrong = uploadMismatch(image, sent, opts.sizeBytes);
    if (wrong) {
      throw new BackendError(`the upload of Glance image "${id}" to ${this.endpoint} is not what was sent: ${wrong}`, {
        hint: "the image holds other bytes than these; delete it and upload again",
      });
    }
    return { image, ...sent };
  }

  async download(id: string, opts: DownloadOptions = {}): Promise<Download> {
    const offset = opts.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) throw new InvalidInputError("offset", "must be a whole number of bytes, 0 or more");
    const path = `${imagePath(id)}/file`;
    const what = this.http.what("GET", path);
    const res = await this.http.request({ method: "GET", path, headers: offset > 0 ? { range: `bytes=${offset}-` } : {}, signal: opts.signal });
    const status = res.statusCode ?? 0;
    if (status === 204) {
      res.resume();
      throw new ConflictError(`Glance image "${id}" on ${this.endpoint} has no data yet`, { hint: "an image is readable once its upload or import made it active" });
    }
    if (status === 416) {
      res.resume();
      throw new InvalidInputError("offset", `${offset} is at or past the end of Glance image "${id}" on ${this.endpoint}`);
    }
    if (status !== 200 && status !== 206) throw await this.failure(what, res, id);
    const length = headerNumber(res, "content-length");
    const contentMd5 = typeof res.headers["content-md5"] === "string" ? res.headers["content-md5"] : undefined;
    if (status === 200) {
      if (offset > 0) {
        res.destroy();
        throw new BackendError(`${what} ignored the range asked for (bytes from ${offset}) and answered with the whole image`);
      }
      return { body: res, offset: 0, length, totalBytes: length, contentMd5 };
    }
    const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(String(res.headers["content-range"] ?? ""));
    if (!range || Number(range[1]) !== offset) {
      res.destroy();
      throw new BackendError(`${what}: asked for the bytes from ${offset}, the answer holds ${range ? `the bytes from ${range[1]}` : "no Content-Range"}`);
    }
    return { body: res, offset, length, totalBytes: range[3] === "*" ? undefined : Number(range[3]), contentMd5 };
  }

  async update(id: string, changes: ImageUpdate): Promise<ImageRecord> {
    const ops: Array<{ op: "add" | "replace" | "remove"; path: string; value?: unknown }> = [];
    const set = changes.set ?? {};
    const base: Array<[keyof typeof set, string]> = [
      ["name", "name"],
      ["visibility", "visibility"],
      ["protected", "protected"],
      ["minDiskGiB", "min_disk"],
      ["minRamMiB", "min_ram"],
      ["hidden", "os_hidden"],
    ];
    for (const [field, glanceField] of base) if (set[field] !== undefined) ops.push({ op: "replace", path: `/${glanceField}`, value: set[field] });
    // add replaces a property that is there (JSON patch's rule, which Glance keeps).
    for (const [key, value] of Object.entries(set.properties ?? {})) {
      checkProperty(`set.properties.${key}`, key);
      if (typeof value !== "string") throw new InvalidInputError(`set.properties.${key}`, "must be a string (Glance keeps properties as strings)");
      ops.push({ op: "add", path: `/${pointer(key)}`, value });
    }
    if (changes.remove?.length) {
      for (const key of changes.remove) checkProperty(`remove.${key}`, key);
      // Glance answers 409 to removing what is not there; not being there is what was asked for.
      const current = await this.show(id);
      for (const key of changes.remove) if (key in current.properties && !(key in (set.properties ?? {}))) ops.push({ op: "remove", path: `/${pointer(key)}` });
    }
    if (changes.tags !== undefined) ops.push({ op: "replace", path: "/tags", value: changes.tags });
    if (ops.length === 0) return this.show(id);
    const patched = await this.json({ method: "PATCH", path: imagePath(id), headers: { "content-type": JSON_PATCH }, body: Buffer.from(JSON.stringify(ops)) }, [200], id);
    return toImageRecord(patched);
  }

  async delete(id: string): Promise<void> {
    const path = imagePath(id);
    const what = this.http.what("DELETE", path);
    const res = await this.http.text({ method: "DELETE", path });
    if (res.status === 204 || res.status === 200 || res.status === 404) return;
    const err = glanceError(what, res, { endpoint: this.endpoint, subject: { kind: "Glance image", key: id } });
    if (res.status === 403) {
      const image = await this.show(id).catch(() => undefined);
      if (image?.protected) {
        throw new ConflictError(`Glance image "${id}" on ${this.endpoint} is protected and cannot be deleted`, { field: "protected", hint: "set protected to false first" });
      }
    }
    throw err;
  }

  async locations(id: string): Promise<ImageLocation[] | undefined> {
    // The locations call (2.17+) needs the service role; otherwise the image shows them, when the operator lets it.
    const res = await this.http.text({ method: "GET", path: `${imagePath(id)}/locations` });
    if (res.status === 200) {
      const parsed = parseJson(res.body, this.http.what("GET", `${imagePath(id)}/locations`));
      return (Array.isArray(parsed) ? parsed : []).map(toLocation);
    }
    if (res.status !== 404 && res.status !== 403) throw glanceError(this.http.what("GET", `${imagePath(id)}/locations`), res, { endpoint: this.endpoint, subject: { kind: "Glance image", key: id } });
    return (await this.show(id)).locations;
  }

  close(): void {
    this.http.close();
  }

  /** Waits (up to the idle timeout) while Glance still holds the image as `saving` after an upload broke off. */
  private async settleAbortedUpload(id: string): Promise<void> {
    const deadline = Date.now() + this.http.timeoutMs;
    while (Date.now() < deadline) {
      const image = await this.show(id).catch(() => undefined);
      if (image?.status !== "saving") return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** A call's JSON answer, when its status is one of `ok`; otherwise the typed error. */
  private async json(req: GlanceRequest, ok: number[], imageId?: string): Promise<Record<string, unknown>> {
    const what = this.http.what(req.method, req.path);
    const res = await this.http.text(req);
    if (!ok.includes(res.status)) throw glanceError(what, res, { endpoint: this.endpoint, subject: imageId === undefined ? undefined : { kind: "Glance image", key: imageId } });
    return parseJson(res.body, what) as Record<string, unknown>;
  }

  /** A call's JSON answer, or undefined where the service does not have the call (404, or 403 by policy). */
  private async optionalJson(req: GlanceRequest): Promise<unknown> {
    const res = await this.http.text(req);
    if (res.status === 404 || res.status === 403) return undefined;
    if (res.status !== 200) throw glanceError(this.http.what(req.method, req.path), res, { endpoint: this.endpoint });
    return parseJson(res.body, this.http.what(req.method, req.path));
  }

  private async failure(what: string, res: IncomingMessage, id: string): Promise<Error> {
    const body = await readText(res, what).catch(() => "");
    return glanceError(what, { status: res.statusCode ?? 0, body }, { endpoint: this.endpoint, subject: { kind: "Glance image", key: id } });
  }
}

/** Counts and hashes what passes, md5 (Glance's checksum) and sha512 (its default os_hash_algo). */
class HashingStream extends Transform {
  bytes = 0;
  readonly md5: Hash = createHash("md5");
  readonly sha512: Hash = createHash("sha512");
  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    this.md5.update(chunk);
    this.sha512.update(chunk);
    done(null, chunk);
  }
}

/** What differs between what was sent and what Glance recorded, or undefined when nothing does. */
function uploadMismatch(image: ImageRecord, sent: { sentBytes: number; md5: string; hash: { algo: string; value: string } }, expected: number | undefined): string | undefined {
  if (expected !== undefined && sent.sentBytes !== expected) return `${sent.sentBytes} bytes were sent, ${expected} were expected (the source ended early or ran long)`;
  if (sent.sentBytes === 0 && expected === undefined) return "no bytes were sent (an empty source), and Glance made an empty image of it";
  if (image.status !== "active") return `its status is ${image.status}, not active`;
  if (image.sizeBytes !== sent.sentBytes) return `Glance holds ${image.sizeBytes ?? "no"} bytes, ${sent.sentBytes} were sent`;
  if (image.checksum !== undefined && image.checksum !== sent.md5) return `its md5 is ${image.checksum}, the bytes sent have ${sent.md5}`;
  if (image.hash && image.hash.algo === sent.hash.algo && image.hash.value !== sent.hash.value) return `its ${image.hash.algo} differs from the bytes sent`;
  return undefined;
}

function matches(image: ImageRecord, query: ImageQuery): boolean {
  if (query.name !== undefined && image.name !== query.name) return false;
  if (query.tags && !query.tags.every((t) => image.tags.includes(t))) return false;
  if (query.status && image.status !== query.status) return false;
  return Object.entries(query.properties ?? {}).every(([k, v]) => image.properties[k] === v);
}

function imagePath(id: string): string {
  if (typeof id !== "string" || !IMAGE_ID.test(id)) throw new InvalidInputError("id", "must be a Glance image id (a UUID)");
  return `/v2/images/${id}`;
}

function checkProperty(field: string, key: string): void {
  if (key.length === 0 || key.length > 255) throw new InvalidInputError(field, "must be a property name of 1-255 characters");
  if (isReservedField(key)) throw new InvalidInputError(field, `is one of Glance's own fields, not a property`);
}

/** A JSON pointer's token (RFC 6901): ~ and / escaped. */
function pointer(key: string): string {
  return key.replace(/~/g, "~0").replace(/\//g, "~1");
}

function headerNumber(res: IncomingMessage, name: string): number | undefined {
  const value = res.headers[name];
  const n = typeof value === "string" ? Number(value) : NaN;
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

function parseJson(text: string, what: string): unknown {
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new BackendError(`${what} answered with something that is not JSON`, { hint: "check imageServices endpoint: it should be Glance's root, such as http://127.0.0.1:9292" });
  }
}
