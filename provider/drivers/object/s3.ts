import { BackendError, InvalidInputError } from "../../util/errors";
import { bodyProgress, errorDetail, rangeBody, sendWithRetry, type HttpRequest, type HttpResponse } from "./http";
import { uriEncode, signV4, type SigningKey } from "./sigv4";
import { bodyLength, PreconditionFailed, type Body, type ByteRange, type GetOptions, type ObjectStore, type PutOptions, type StoredObject } from "./store";

export interface S3Settings {
  endpoint: string;
  bucket: string;
  region: string;
  accessKey: string;
  secretKey: string;
  timeoutMs: number;
}

const unquote = (etag: string | string[] | undefined) => String(etag ?? "").replace(/^"|"$/g, "");

/** An S3 bucket, path-style (radosgw, MinIO and AWS all take it), signed with SigV4. */
export class S3Store implements ObjectStore {
  readonly api = "s3";
  readonly where: string;
  private readonly key: SigningKey;
  private readonly base: string;

  constructor(private readonly s: S3Settings) {
    this.where = `${s.endpoint.replace(/\/+$/, "")}/${s.bucket}`;
    this.base = this.where;
    this.key = { accessKey: s.accessKey, secretKey: s.secretKey, region: s.region };
  }

  private request(method: HttpRequest["method"], key: string, opts: { query?: Record<string, string>; headers?: Record<string, string>; body?: Body; onBody?: HttpRequest["onBody"] } = {}): Promise<HttpResponse> {
    const what = `${method} ${key || "(bucket)"} on ${this.where}`;
    return sendWithRetry(() => {
      const url = new URL(`${this.base}/${uriEncode(key, true)}`);
      for (const [k, v] of Object.entries(opts.query ?? {})) url.searchParams.set(k, v);
      const headers = { ...(opts.headers ?? {}) };
      signV4(method, url, headers, this.key);
      return { method, url, headers, body: opts.body, onBody: opts.onBody };
    }, { timeoutMs: this.s.timeoutMs, what });
  }

  /** An answer that is not what the operation expects: credentials and a missing bucket name their field. */
  private failure(what: string, res: HttpResponse): Error {
    const detail = errorDetail(res);
    if (res.status === 403 || detail.includes("InvalidAccessKeyId") || detail.includes("SignatureDoesNotMatch")) {
      return new InvalidInputError("secretKey", `${this.where} refused the credentials (HTTP ${res.status}${detail})`, { hint: "check accessKey and secretKey" });
    }
    if (detail.includes("NoSuchBucket")) {
      return new InvalidInputError("bucket", `bucket ${JSON.stringify(this.s.bucket)} does not exist at ${this.s.endpoint}`, { hint: "create it, or name another" });
    }
    return new BackendError(`${what} on ${this.where}: HTTP ${res.status}${detail}`);
  }

  async check(): Promise<void> {
    const res = await this.request("HEAD", "");
    if (res.status === 404) throw new InvalidInputError("bucket", `bucket ${JSON.stringify(this.s.bucket)} does not exist at ${this.s.endpoint}`, { hint: "create it, or name another" });
    if (res.status !== 200) throw this.failure("HEAD bucket", res);
  }

  /** Makes the bucket (tests and first-time setup; the driver itself never creates one). */
  async createContainer(): Promise<void> {
    const res = await this.request("PUT", "");
    if (res.status !== 200 && !(res.status === 409 && errorDetail(res).includes("BucketAlreadyOwnedByYou"))) throw this.failure("PUT bucket", res);
  }

  async put(key: string, body: Body, opts: PutOptions = {}): Promise<StoredObject> {
    const headers: Record<string, string> = { "content-type": "application/octet-stream" };
    if (opts.ifNoneMatch) headers["if-none-match"] = "*";
    // radosgw compares If-Match with the ETag as stored, without its quotes.
    if (opts.ifMatch !== undefined) headers["if-match"] = opts.ifMatch;
    const res = await this.request("PUT", key, { headers, body });
    if (res.status === 412) throw new PreconditionFailed(key);
    if (res.status === 404 && opts.ifMatch !== undefined && !errorDetail(res).includes("NoSuchBucket")) throw new PreconditionFailed(key);
    if (res.status !== 200 && res.status !== 201) throw this.failure(`PUT ${key}`, res);
    return { etag: unquote(res.headers.etag), size: bodyLength(body) };
  }

  async get(key: string, range?: ByteRange, opts: GetOptions = {}): Promise<Buffer | undefined> {
    const headers: Record<string, string> = {};
    if (range) headers.range = `bytes=${range.offset}-${range.offset + range.length - 1}`;
    const res = await this.request("GET", key, { headers, onBody: opts.onData && bodyProgress(range, opts.onData) });
    if (res.status === 404 && !errorDetail(res).includes("NoSuchBucket")) return undefined;
    if (res.status !== 200 && res.status !== 206) throw this.failure(`GET ${key}`, res);
    return rangeBody(res, range, `GET ${key} on ${this.where}`);
  }

  async read(key: string): Promise<{ body: Buffer; etag: string } | undefined> {
    const res = await this.request("GET", key);
    if (res.status === 404 && !errorDetail(res).includes("NoSuchBucket")) return undefined;
    if (res.status !== 200) throw this.failure(`GET ${key}`, res);
    return { body: res.body, etag: unquote(res.headers.etag) };
  }

  async head(key: string): Promise<StoredObject | undefined> {
    const res = await this.request("HEAD", key);
    if (res.status === 404) {
      // A HEAD has no body to tell a missing key from a missing bucket.
      return undefined;
    }
    if (res.status !== 200) throw this.failure(`HEAD ${key}`, res);
    return { etag: unquote(res.headers.etag), size: Number(res.headers["content-length"] ?? 0) };
  }

  async delete(key: string): Promise<void> {
    const res = await this.request("DELETE", key);
    if (res.status !== 204 && res.status !== 200 && res.status !== 404) throw this.failure(`DELETE ${key}`, res);
  }

  async *list(prefix: string): AsyncIterable<{ key: string; size: number }> {
    let token: string | undefined;
    for (;;) {
      const query: Record<string, string> = { "list-type": "2", prefix, "max-keys": "1000" };
      if (token) query["continuation-token"] = token;
      const res = await this.request("GET", "", { query });
      if (res.status !== 200) throw this.failure(`LIST ${prefix}`, res);
      const xml = res.body.toString("utf8");
      for (const m of xml.matchAll(/<Contents>([\s\S]*?)<\/Contents>/g)) {
        const key = /<Key>([\s\S]*?)<\/Key>/.exec(m[1])?.[1];
        const size = Number(/<Size>(\d+)<\/Size>/.exec(m[1])?.[1] ?? 0);
        if (key !== undefined) yield { key: decodeXml(key), size };
      }
      token = /<NextContinuationToken>([\s\S]*?)<\/NextContinuationToken>/.exec(xml)?.[1];
      if (!/<IsTruncated>true<\/IsTruncated>/.test(xml) || !token) return;
      token = decodeXml(token);
    }
  }
}

function decodeXml(s: string): string {
  return s.replace(/&(lt|gt|amp|quot|apos|#\d+);/g, (_, e: string) =>
    e === "lt" ? "<" : e === "gt" ? ">" : e === "amp" ? "&" : e === "quot" ? '"' : e === "apos" ? "'" : String.fromCharCode(Number(e.slice(1))),
  );
}
