import http from "node:http";
import https from "node:https";
import type { Readable } from "node:stream";
import { BackendError } from "../../util/errors";
import type { GlanceSettings } from "./config";

// The Glance client's HTTP: node:http and node:https themselves (streamed bodies with
// backpressure, 100-continue, a CA of the configuration's), kept-alive sockets, an idle timeout
// (no byte moved for timeoutSeconds) rather than a total one, since an image may be any size,
// and retries of the calls that can be repeated (GET, HEAD, DELETE, PUT with a small body);
// never of an upload or a POST, and never of a PATCH (a repeated "remove" fails).

export type Method = "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE";

export interface GlanceRequest {
  method: Method;
  /** From the endpoint's root: "/v2/images?name=x". */
  path: string;
  headers?: Record<string, string>;
  /** A Buffer goes with its length; a Readable goes chunked, as fast as the server takes it. */
  body?: Buffer | Readable;
  signal?: AbortSignal;
}

/** A request that got no HTTP answer (refused, reset, no byte within the idle timeout). */
export class TransportError extends Error {
  constructor(
    message: string,
    readonly errno?: string,
  ) {
    super(message);
  }
}

/** Answers worth a second try: the server or a proxy in front of it passing trouble. */
const transient = new Set([408, 429, 502, 503, 504]);
const ATTEMPTS = 3;
/** Bodies read whole (JSON answers, errors) stop here: an image list of thousands is a few MiB. */
const MAX_TEXT_BYTES = 64 << 20;

export class GlanceHttp {
  private readonly agent: http.Agent;
  private readonly base: URL;

  // A #private field: neither JSON.stringify nor util.inspect (a logged client) shows the token in it.
  readonly #settings: GlanceSettings;

  constructor(settings: GlanceSettings) {
    this.#settings = settings;
    this.base = new URL(settings.endpoint);
    const options = { keepAlive: true, maxSockets: 16, keepAliveMsecs: 10_000 };
    this.agent = this.base.protocol === "https:" ? new https.Agent({ ...options, ca: settings.ca }) : new http.Agent(options);
  }

  get endpoint(): string {
    return this.#settings.endpoint;
  }

  get timeoutMs(): number {
    return this.#settings.timeoutMs;
  }

  /** How an error names a call: "GET /v2/images/ID on http://127.0.0.1:9292" (never a query's values or a header). */
  what(method: Method, path: string): string {
    return `${method} ${path.split("?")[0]} on ${this.#settings.endpoint}`;
  }

  /**
   * Sends a request and returns its answer with the body unread (a stream), whatever its
   * status. Repeatable calls are retried on no answer or a transient status; the error after
   * the last attempt names the endpoint and what went wrong.
   */
  async request(req: GlanceRequest): Promise<http.IncomingMessage> {
    const repeatable = isRepeatable(req);
    let delay = 250;
    for (let attempt = 1; ; attempt++) {
      let failure: string;
      try {
        const res = await this.once(req);
        if (!repeatable || !transient.has(res.statusCode ?? 0) || attempt === ATTEMPTS) return res;
        res.resume();
        failure = `HTTP ${res.statusCode}`;
      } catch (err) {
        if (!(err instanceof TransportError)) throw err;
        failure = err.errno ? `${err.message} (${err.errno})` : err.message;
        if (!repeatable || attempt === ATTEMPTS) throw this.unreachable(req, failure, attempt);
      }
      await sleep(delay * (0.5 + Math.random()), req.signal);
      delay *= 4;
    }
  }

  /** A request whose answer is read whole: the status, the headers and the body as text. */
  async text(req: GlanceRequest): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
    const res = await this.request(req);
    return { status: res.statusCode ?? 0, headers: res.headers, body: await readText(res, this.what(req.method, req.path)) };
  }

  /** Closes the kept-alive sockets. */
  close(): void {
    this.agent.destroy();
  }

  private unreachable(req: GlanceRequest, failure: string, attempts: number): BackendError {
    return new BackendError(`${this.what(req.method, req.path)} got no answer${attempts > 1 ? ` in ${attempts} attempts` : ""}: ${failure}`, {
      hint: `check that Glance is up and reachable at ${this.#settings.endpoint} (imageServices endpoint; timeoutSeconds bounds each wait)`,
    });
  }

  private once(req: GlanceRequest): Promise<http.IncomingMessage> {
    const url = new URL(this.base.pathname.replace(/\/$/, "") + req.path, this.base);
    const lib = url.protocol === "https:" ? https : http;
    const timeoutMs = this.#settings.timeoutMs;
    const headers: Record<string, string> = { accept: "application/json", ...this.#settings.authHeaders, ...req.headers };
    const streamed = req.body !== undefined && !Buffer.isBuffer(req.body);
    if (Buffer.isBuffer(req.body)) headers["content-length"] = String(req.body.length);
    else if (streamed) {
      // Chunked, and only once the server says it wants the body: a refusal (409, 413) costs no byte sent.
      headers["transfer-encoding"] = "chunked";
      headers.expect = "100-continue";
    } else if (["PUT", "POST", "PATCH"].includes(req.method)) headers["content-length"] = "0";

    return new Promise((resolve, reject) => {
      // timeout: the socket's idle timeout, from before it connects (a black-holed address) to the last byte.
      const r = lib.request(url, { method: req.method, headers, agent: this.agent, timeout: timeoutMs, signal: req.signal });
      let answered: http.IncomingMessage | undefined;
      // The caller's stream failing is its own error, not the server's: passed on as it is.
      let bodyFailed: Error | undefined;
      const fail = (err: Error) => {
        if (answered) return;
        if (bodyFailed) return reject(bodyFailed);
        if (err.name === "AbortError") return reject(err);
        reject(err instanceof TransportError ? err : new TransportError(err.message, (err as NodeJS.ErrnoException).code));
      };
      r.on("error", fail);
      r.on("timeout", () => {
        const res = answered;
        // A body the caller is slow to read (its buffer full) is the caller's pause, not the server's silence.
        if (res && res.readableLength >= res.readableHighWaterMark) return;
        const err = new TransportError(`no byte moved for ${Math.round(timeoutMs / 1000)} s`, "ETIMEDOUT");
        if (res) res.destroy(err);
        r.destroy(err);
      });
      r.on("response", (res) => {
        answered = res;
        if (streamed) {
          // An answer before the whole body went (a refusal part-way) ends the body here, and the
          // socket with the answer: a request left unfinished cannot go back to the pool.
          (req.body as Readable).unpipe(r);
          res.once("end", () => r.writableFinished || r.destroy());
        }
        resolve(res);
      });
      if (!streamed) return void r.end(req.body);
      const body = req.body as Readable;
      let started = false;
      const start = () => {
        if (started || answered) return;
        started = true;
        body.on("error", (err) => {
          bodyFailed = err;
          r.destroy(err);
        });
        body.pipe(r);
      };
      r.on("continue", start);
      // A server that never says 100 Continue gets the body anyway after a second, as curl does.
      setTimeout(start, 1000).unref();
    });
  }
}

function isRepeatable(req: GlanceRequest): boolean {
  if (req.body !== undefined && !Buffer.isBuffer(req.body)) return false;
  return req.method === "GET" || req.method === "HEAD" || req.method === "DELETE" || (req.method === "PUT" && (req.body?.length ?? 0) === 0);
}

/** An answer's body as text, to MAX_TEXT_BYTES. */
export async function readText(res: http.IncomingMessage, what: string): Promise<string> {
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      length += chunk.length;
      if (length > MAX_TEXT_BYTES) {
        res.destroy();
        throw new BackendError(`${what}: the answer is larger than ${MAX_TEXT_BYTES >> 20} MiB`);
      }
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof BackendError) throw err;
    throw new BackendError(`${what}: the answer broke off: ${(err as Error).message}`, { cause: err });
  }
  return Buffer.concat(chunks).toString("utf8");
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => (clearTimeout(timer), reject(signal.reason)), { once: true });
  });
}
