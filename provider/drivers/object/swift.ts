import { BackendError, InvalidInputError } from "../../util/errors";
import { bodyProgress, errorDetail, rangeBody, sendWithRetry, type HttpRequest, type HttpResponse } from "./http";
import { uriEncode } from "./sigv4";
import { bodyLength, PreconditionFailed, type Body, type ByteRange, type GetOptions, type ObjectStore, type PutOptions, type StoredObject } from "./store";

export interface SwiftSettings {
  /** v1 auth (tempauth, swauth, radosgw): the URL, the user ("account:user") and the key. */
  authUrl?: string;
  user?: string;
  key?: string;
  /** Or a storage URL and a token got elsewhere (Keystone). */
  storageUrl?: string;
  token?: string;
  container: string;
  timeoutMs: number;
}

const unquote = (etag: string | string[] | undefined) => String(etag ?? "").replace(/^"|"$/g, "");

/**
 * A Swift container through Swift's own API. Reads of what decides correctness (log probes,
 * the lease, the hint, checkpoints) ask for the newest replica (X-Newest), since Swift's replicas
 * and listings are only eventually consistent. A read of an object that is never overwritten (a
 * record's data: `immutable`) does not: every copy of it holds the same bytes, and the proxy
 * tries the other replicas itself when one does not have it, while X-Newest would make it ask
 * every replica and wait for the slowest.
 */
export class SwiftStore implements ObjectStore {
  readonly api = "swift";
  readonly where: string;
  private session?: Promise<{ storageUrl: string; token: string }>;

  constructor(private readonly s: SwiftSettings) {
    this.where = `${s.authUrl ?? s.storageUrl}, container ${s.container}`;
  }

  private auth(): Promise<{ storageUrl: string; token: string }> {
    if (this.s.storageUrl && this.s.token) return Promise.resolve({ storageUrl: this.s.storageUrl, token: this.s.token });
    this.session ??= (async () => {
      const res = await sendWithRetry(
        () => ({ method: "GET", url: new URL(this.s.authUrl as string), headers: { "x-auth-user": this.s.user ?? "", "x-auth-key": this.s.key ?? "" } }),
        { timeoutMs: this.s.timeoutMs, what: `Swift auth at ${this.s.authUrl}` },
      );
      if (res.status === 401 || res.status === 403) throw new InvalidInputError("key", `${this.s.authUrl} refused user ${JSON.stringify(this.s.user)} (HTTP ${res.status})`, { hint: "check user and key" });
      const storageUrl = res.headers["x-storage-url"];
      const token = res.headers["x-auth-token"] ?? res.headers["x-storage-token"];
      if (res.status >= 300 || typeof storageUrl !== "string" || typeof token !== "string") {
        throw new BackendError(`Swift auth at ${this.s.authUrl} answered HTTP ${res.status}${errorDetail(res)} without a storage URL and token`);
      }
      return { storageUrl, token };
    })().catch((err) => {
      this.session = undefined;
      throw err;
    });
    return this.session;
  }

  private async request(method: HttpRequest["method"], key: string, opts: { query?: Record<string, string>; headers?: Record<string, string>; body?: Body; onBody?: HttpRequest["onBody"] } = {}): Promise<HttpResponse> {
    for (let attempt = 0; ; attempt++) {
      const { storageUrl, token } = await this.auth();
      const res = await sendWithRetry(() => {
        const url = new URL(`${storageUrl.replace(/\/+$/, "")}/${uriEncode(this.s.container, false)}${key ? "/" + uriEncode(key, true) : ""}`);
        for (const [k, v] of Object.entries(opts.query ?? {})) url.searchParams.set(k, v);
        return { method, url, headers: { ...(opts.headers ?? {}), "x-auth-token": token }, body: opts.body, onBody: opts.onBody };
      }, { timeoutMs: this.s.timeoutMs, what: `${method} ${key || "(container)"} on ${this.where}` });
      // A token expires: authenticate again, once.
      if (res.status === 401 && attempt === 0 && this.s.authUrl) {
        this.session = undefined;
        continue;
      }
      return res;
    }
  }

  private failure(what: string, res: HttpResponse): Error {
    if (res.status === 401 || res.status === 403) return new InvalidInputError("key", `${this.where} refused the credentials (HTTP ${res.status})`, { hint: "check user and key (or token)" });
    return new BackendError(`${what} on ${this.where}: HTTP ${res.status}${errorDetail(res)}`);
  }

  async check(): Promise<void> {
    const res = await this.request("HEAD", "");
    if (res.status === 404) throw new InvalidInputError("container", `container ${JSON.stringify(this.s.container)} does not exist at ${this.s.authUrl ?? this.s.storageUrl}`, { hint: "create it, or name another" });
    if (res.status >= 300) throw this.failure("HEAD container", res);
  }

  async createContainer(): Promise<void> {
    const res = await this.request("PUT", "");
    if (res.status >= 300) throw this.failure("PUT container", res);
  }

  async put(key: string, body: Body, opts: PutOptions = {}): Promise<StoredObject> {
    if (opts.ifMatch !== undefined) throw new Error("Swift has no conditional overwrite (If-Match)");
    const headers: Record<string, string> = { "content-type": "application/octet-stream" };
    if (opts.ifNoneMatch) headers["if-none-match"] = "*";
    if (opts.deleteAfterSeconds !== undefined) headers["x-delete-after"] = String(opts.deleteAfterSeconds);
    const res = await this.request("PUT", key, { headers, body });
    // 202: a replica had a newer copy already; the proxy's way of saying this create lost.
    if (res.status === 412 || (opts.ifNoneMatch && res.status === 202)) throw new PreconditionFailed(key);
    if (res.status === 404) throw new InvalidInputError("container", `container ${JSON.stringify(this.s.container)} does not exist at ${this.s.authUrl ?? this.s.storageUrl}`);
    if (res.status !== 201) throw this.failure(`PUT ${key}`, res);
    return { etag: unquote(res.headers.etag), size: bodyLength(body) };
  }

  async get(key: string, range?: ByteRange, opts: GetOptions = {}): Promise<Buffer | undefined> {
    const headers: Record<string, string> = opts.immutable ? {} : { "x-newest": "true" };
    if (range) headers.range = `bytes=${range.offset}-${range.offset + range.length - 1}`;
    const res = await this.request("GET", key, { headers, onBody: opts.onData && bodyProgress(range, opts.onData) });
    if (res.status === 404) return undefined;
    if (res.status !== 200 && res.status !== 206) throw this.failure(`GET ${key}`, res);
    return rangeBody(res, range, `GET ${key} on ${this.where}`);
  }

  async read(key: string): Promise<{ body: Buffer; etag: string } | undefined> {
    const res = await this.request("GET", key, { headers: { "x-newest": "true" } });
    if (res.status === 404) return undefined;
    if (res.status !== 200) throw this.failure(`GET ${key}`, res);
    return { body: res.body, etag: unquote(res.headers.etag) };
  }

  async head(key: string): Promise<StoredObject | undefined> {
    const res = await this.request("HEAD", key, { headers: { "x-newest": "true" } });
    if (res.status === 404) return undefined;
    if (res.status >= 300) throw this.failure(`HEAD ${key}`, res);
    return { etag: unquote(res.headers.etag), size: Number(res.headers["content-length"] ?? 0) };
  }

  async delete(key: string): Promise<void> {
    const res = await this.request("DELETE", key);
    if (res.status >= 300 && res.status !== 404) throw this.failure(`DELETE ${key}`, res);
  }

  async *list(prefix: string): AsyncIterable<{ key: string; size: number }> {
    let marker = "";
    for (;;) {
      const res = await this.request("GET", "", { query: { format: "json", prefix, marker, limit: "1000" } });
      if (res.status === 204) return;
      if (res.status !== 200) throw this.failure(`LIST ${prefix}`, res);
      const entries = JSON.parse(res.body.toString("utf8") || "[]") as Array<{ name: string; bytes: number }>;
      for (const e of entries) yield { key: e.name, size: e.bytes };
      if (entries.length < 1000) return;
      marker = entries[entries.length - 1].name;
    }
  }
}
