import http, { type IncomingMessage } from "node:http";
import https from "node:https";
import { PassThrough, type Readable } from "node:stream";
import { BackendError, InvalidInputError, NotFoundError } from "../../util/errors";
import { contentMd5, type Digest } from "../digest";
import type { ImageSource, SourceDescription } from "./source";

// An image at an http(s) URL. Redirects are followed a few times and never from https down to
// http; a URL with a user or password in it is refused (it would end up in records and
// messages: send credentials as headers). A transfer that stalls is stopped after an idle
// time (not a total one: a large image on a slow link is fine while bytes flow), a body that
// ends short of its Content-Length is an error, and a download resumes with Range.

export interface HttpSourceOptions {
  url: string;
  expect?: Digest[];
  /** Extra request headers (an Authorization for a private server); never shown in messages. */
  headers?: Record<string, string>;
  /** PEM of the CA that signs the server's certificate, for private https servers. */
  ca?: string;
  idleTimeoutMs?: number;
  maxRedirects?: number;
  /** The input field the URL came from, for errors. */
  field?: string;
}

const DEFAULT_IDLE_MS = 30_000;
const DEFAULT_REDIRECTS = 5;

/** Why a request was ended from this side (its idle timer), which the answer's own error would hide. */
const stopped = new WeakMap<IncomingMessage, () => BackendError | undefined>();

/** The URL without credentials or query (a signed URL's query is a credential), for messages. */
export function shownUrl(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

export class HttpSource implements ImageSource {
  private readonly url: URL;
  private readonly field: string;
  private readonly idleMs: number;

  constructor(private readonly opts: HttpSourceOptions) {
    this.field = opts.field ?? "image";
    let url: URL;
    try {
      url = new URL(opts.url);
    } catch {
      throw new InvalidInputError(this.field, `${JSON.stringify(opts.url.slice(0, 200))} is not a URL`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new InvalidInputError(this.field, `only http and https URLs are read, not ${url.protocol}`);
    if (url.username || url.password) {
      throw new InvalidInputError(this.field, "a URL with a user or password in it would be kept in records and messages", { hint: "pass credentials as a header instead" });
    }
    this.url = url;
    this.idleMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_MS;
  }

  get where(): string {
    return shownUrl(this.url);
  }

  pinnedDigests(): Digest[] {
    return [...(this.opts.expect ?? [])];
  }

  /** One request, redirects followed; the answer's status is left to the caller. */
  private async request(method: "GET" | "HEAD", headers: Record<string, string>, signal?: AbortSignal): Promise<{ res: IncomingMessage; url: URL }> {
    let url = this.url;
    for (let hop = 0; ; hop++) {
      const res = await this.once(url, method, headers, signal);
      const location = res.headers.location;
      if (!(res.statusCode && res.statusCode >= 300 && res.statusCode < 400 && location)) return { res, url };
      res.resume();
      if (hop >= (this.opts.maxRedirects ?? DEFAULT_REDIRECTS)) throw new BackendError(`${this.where}: more than ${this.opts.maxRedirects ?? DEFAULT_REDIRECTS} redirects`);
      const next = new URL(location, url);
      if (next.protocol !== "http:" && next.protocol !== "https:") throw new BackendError(`${this.where}: redirected to a ${next.protocol} URL, which is not read`);
      if (url.protocol === "https:" && next.protocol === "http:") throw new BackendError(`${this.where}: redirected from https to plain http (${shownUrl(next)}); refused`);
      url = next;
    }
  }

  private once(url: URL, method: string, headers: Record<string, string>, signal?: AbortSignal): Promise<IncomingMessage> {
    const lib = url.protocol === "https:" ? https : http;
    return new Promise((resolve, reject) => {
      const req = lib.request(url, { method, headers: { ...this.opts.headers, ...headers }, ca: this.opts.ca, signal });
      // Idle, not total: the timer restarts with every byte on the socket.
      let idle: BackendError | undefined;
      req.setTimeout(this.idleMs, () => {
        idle = new BackendError(`${shownUrl(url)} sent nothing for ${Math.round(this.idleMs / 1000)} s`);
        req.destroy(idle);
      });
      req.once("response", (res) => {
        stopped.set(res, () => idle);
        resolve(res);
      });
      req.once("error", (err) => reject(err instanceof BackendError ? err : new BackendError(`${shownUrl(url)}: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err })));
      req.end();
    });
  }

  private refuse(res: IncomingMessage, url: URL): never {
    res.resume();
    if (res.statusCode === 404 || res.statusCode === 410) throw new NotFoundError("image", shownUrl(url), { field: this.field });
    throw new BackendError(`${shownUrl(url)} answered ${res.statusCode} ${res.statusMessage ?? ""}`.trim());
  }

  async describe(): Promise<SourceDescription> {
    let { res, url } = await this.request("HEAD", {});
    let size: number | undefined;
    if (res.statusCode === 405 || res.statusCode === 501) {
      // No HEAD here: the first byte, whose Content-Range says the whole size.
      res.resume();
      ({ res, url } = await this.request("GET", { range: "bytes=0-0" }));
      res.destroy();
      const total = /\/(\d+)$/.exec(String(res.headers["content-range"] ?? ""));
      if (total) size = Number(total[1]);
    } else res.resume();
    if (!res.statusCode || res.statusCode >= 400) this.refuse(res, url);
    if (size === undefined && res.statusCode === 200 && res.headers["content-length"] !== undefined) size = Number(res.headers["content-length"]);
    const expect = [...(this.opts.expect ?? [])];
    const md5 = contentMd5(res.headers["content-md5"] as string | undefined);
    if (md5) expect.push(md5);
    const vouched = this.opts.expect?.[0];
    const validator = res.headers.etag ?? res.headers["last-modified"];
    return {
      identity: vouched ? `${vouched.algo}:${vouched.value}` : validator ? `url:${shownUrl(url)} ${validator}` : undefined,
      sizeBytes: size,
      expect,
      rangeable: res.headers["accept-ranges"] === "bytes" || res.statusCode === 206,
      where: shownUrl(url),
      origin: { kind: "url", location: shownUrl(url) },
    };
  }

  async open(opts: { offset?: number; signal?: AbortSignal } = {}): Promise<Readable> {
    const offset = opts.offset ?? 0;
    const { res, url } = await this.request("GET", offset > 0 ? { range: `bytes=${offset}-` } : {}, opts.signal);
    if (!res.statusCode || res.statusCode >= 400) this.refuse(res, url);
    if (offset > 0) {
      const start = /^bytes (\d+)-/.exec(String(res.headers["content-range"] ?? ""));
      if (res.statusCode !== 206 || !start || Number(start[1]) !== offset) {
        res.destroy();
        throw new BackendError(`${shownUrl(url)} did not resume at byte ${offset} (answered ${res.statusCode})`, { hint: "the server does not serve ranges: start over" });
      }
    } else if (res.statusCode !== 200) {
      this.refuse(res, url);
    }
    const length = res.headers["content-length"] !== undefined ? Number(res.headers["content-length"]) : undefined;
    const out = new PassThrough({ highWaterMark: 1024 * 1024 });
    let got = 0;
    const short = () => new BackendError(`${shownUrl(url)}: the transfer ended after ${got} of ${length ?? "?"} bytes`, { hint: "the server or the network cut it; it can resume from the bytes already verified" });
    res.on("data", (chunk: Buffer) => (got += chunk.length));
    const failed = (err?: Error) => out.destroy(stopped.get(res)?.() ?? (err instanceof BackendError ? err : short()));
    res.once("error", failed);
    res.once("aborted", () => failed());
    res.once("end", () => {
      if (length !== undefined && got !== length) out.destroy(short());
    });
    out.once("close", () => res.destroy());
    res.pipe(out);
    return out;
  }
}
