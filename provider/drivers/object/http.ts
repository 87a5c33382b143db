import http from "node:http";
import https from "node:https";
import { BackendError } from "../../util/errors";
import { bodyLength, type Body, type ByteRange } from "./store";

// One small HTTP client for both object APIs: keep-alive sockets (a request per block read must
// not pay a TCP handshake), Buffer bodies with an explicit length (radosgw refuses the chunked
// uploads SDKs send by default), a timeout on every request, and retries of what is transient.
// An answer with a content-length is read into one Buffer of that length as it arrives: joining
// a list of chunks at the end was 5% of the daemon's CPU in sequential reads, and a caller can
// use the bytes already in (onBody) before the last ones come.

export interface HttpRequest {
  method: "GET" | "HEAD" | "PUT" | "POST" | "DELETE";
  url: URL;
  headers: Record<string, string>;
  /** A list of Buffers goes as one body, each written as it is (no copy into one buffer). */
  body?: Body;
  /**
   * Called as an answer's body arrives, when it has a content-length: `body` is the Buffer it
   * is read into (the answer's body once complete), its first `filled` bytes are in.
   */
  onBody?: (res: http.IncomingMessage, body: Buffer, filled: number) => void;
}

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

const agents = {
  http: new http.Agent({ keepAlive: true, maxSockets: 64, keepAliveMsecs: 10_000 }),
  https: new https.Agent({ keepAlive: true, maxSockets: 64, keepAliveMsecs: 10_000 }),
};

/** A request that got no HTTP answer (refused, reset, timed out): the endpoint, never a credential. */
export class TransportError extends Error {
  constructor(
    message: string,
    readonly errno?: string,
  ) {
    super(message);
  }
}

export function send(req: HttpRequest, timeoutMs: number): Promise<HttpResponse> {
  const lib = req.url.protocol === "https:" ? https : http;
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...req.headers };
    if (req.body) headers["content-length"] = String(bodyLength(req.body));
    else if (req.method === "PUT" || req.method === "POST") headers["content-length"] = "0";
    const r = lib.request(req.url, { method: req.method, headers, agent: req.url.protocol === "https:" ? agents.https : agents.http });
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(err instanceof TransportError ? err : new TransportError(err.message, (err as NodeJS.ErrnoException).code));
    };
    const timer = setTimeout(() => r.destroy(new TransportError(`no answer within ${Math.round(timeoutMs / 1000)} s`, "ETIMEDOUT")), timeoutMs);
    r.on("response", (res) => {
      const done = (body: Buffer) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
      };
      const expected = announcedLength(req.method, res);
      if (expected === undefined) {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => done(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)));
      } else {
        // Every byte of it is written before it is handed on: allocUnsafe is safe here.
        const body = Buffer.allocUnsafe(expected);
        let filled = 0;
        res.on("data", (c: Buffer) => {
          if (filled + c.length > expected) return void res.destroy(new TransportError(`the answer's body is longer than its content-length (${expected})`, "EPROTO"));
          filled += c.copy(body, filled);
          req.onBody?.(res, body, filled);
        });
        res.on("end", () => {
          if (filled === expected) done(body);
          else fail(new TransportError(`the answer's body ended after ${filled} of ${expected} bytes`, "ECONNRESET"));
        });
      }
      res.on("error", fail);
      // A connection that closes mid-body may end the answer without an error.
      res.on("close", () => settled || fail(new TransportError("the connection closed before the answer was complete", "ECONNRESET")));
    });
    r.on("error", fail);
    writeBody(r, req.body);
  });
}

/** The length an answer's body will have, when it says and has one (a HEAD's content-length is the object's). */
function announcedLength(method: HttpRequest["method"], res: http.IncomingMessage): number | undefined {
  if (method === "HEAD" || res.statusCode === 204 || res.statusCode === 304) return undefined;
  const declared = res.headers["content-length"];
  if (declared === undefined) return undefined;
  const n = Number(declared);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

function writeBody(r: http.ClientRequest, body: Body | undefined): void {
  if (body === undefined || Buffer.isBuffer(body)) return void r.end(body);
  // Node holds them until the request has its socket (a tick later), then sends them together:
  // 2,049 Buffers of a record went in 4 writev calls, not a write each.
  for (const b of body) if (b.length) r.write(b);
  r.end();
}

/**
 * An onBody for a GET: passes on the bytes as they arrive when they are the ones asked for (a
 * 206 from the range's first byte, or a 200 to a request for the whole object).
 */
export function bodyProgress(range: ByteRange | undefined, onData: (body: Buffer, filled: number) => void): NonNullable<HttpRequest["onBody"]> {
  let seen: Buffer | undefined;
  let wanted = false;
  return (res, body, filled) => {
    if (body !== seen) {
      seen = body;
      wanted = range ? res.statusCode === 206 && rangeStart(res.headers["content-range"]) === range.offset : res.statusCode === 200;
    }
    if (wanted) onData(body, filled);
  };
}

/** The first byte a 206's Content-Range says it holds ("bytes 100-199/1000"). */
export function rangeStart(contentRange: string | undefined): number | undefined {
  const m = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(contentRange ?? "");
  return m ? Number(m[1]) : undefined;
}

/**
 * A ranged GET's bytes from its answer: a 206 must start where asked (else the bytes are not
 * the ones asked for); a store that ignores Range answers 200 with the whole object.
 */
export function rangeBody(res: HttpResponse, range: ByteRange | undefined, what: string): Buffer {
  if (!range) return res.body;
  if (res.status === 200) return res.body.subarray(range.offset, range.offset + range.length);
  const start = rangeStart(res.headers["content-range"] as string | undefined);
  if (start !== undefined && start !== range.offset) throw new BackendError(`${what}: asked for bytes from ${range.offset}, the answer holds bytes from ${start}`);
  return res.body;
}

/** 5xx, 408 and 429 are the store's passing trouble; everything else is an answer. */
export function transientStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

export interface RetryPolicy {
  /** The whole budget for one operation, retries included. */
  timeoutMs: number;
  /** What the operation was, for the error: "PUT log/0000000000000003 on http://127.0.0.1:7480". */
  what: string;
}

/**
 * Sends until an answer that is not transient, with jittered exponential backoff, within the
 * policy's time budget. A request that never got an answer is resent: every request the driver
 * makes is idempotent or conditional (a repeated conditional create answers 412, which the
 * caller resolves by reading what is there).
 */
export async function sendWithRetry(make: () => HttpRequest, policy: RetryPolicy): Promise<HttpResponse> {
  const deadline = Date.now() + policy.timeoutMs;
  let delay = 50;
  let last = "";
  for (let attempt = 1; ; attempt++) {
    const left = deadline - Date.now();
    try {
      const res = await send(make(), Math.max(1000, Math.min(left, policy.timeoutMs)));
      if (!transientStatus(res.status)) return res;
      last = `HTTP ${res.status}${errorDetail(res)}`;
    } catch (err) {
      if (!(err instanceof TransportError)) throw err;
      last = err.errno ? `${err.errno}: ${err.message}` : err.message;
    }
    if (Date.now() + delay >= deadline) {
      throw new BackendError(`${policy.what} failed after ${attempt} attempt${attempt === 1 ? "" : "s"} in ${Math.round(policy.timeoutMs / 1000)} s: ${last}`, {
        hint: "check that the object store is up and reachable (the backend's timeoutSeconds bounds the wait)",
      });
    }
    await new Promise((r) => setTimeout(r, delay * (0.5 + Math.random())));
    delay = Math.min(delay * 2, 2000);
  }
}

/** The store's own short reason (an S3 <Code>, a Swift body line), never more than a line. */
export function errorDetail(res: HttpResponse): string {
  const text = res.body.subarray(0, 2048).toString("utf8");
  const code = /<Code>([^<]{1,100})<\/Code>/.exec(text)?.[1];
  if (code) return ` (${code})`;
  const line = text.split("\n").find((l) => l.trim())?.trim().replace(/<[^>]+>/g, "").slice(0, 120);
  return line ? ` (${line})` : "";
}
