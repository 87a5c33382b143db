import http from "node:http";
import https from "node:https";
import { BackendError } from "../../util/errors";

// One small HTTP client for both object APIs: keep-alive sockets (a request per block read must
// not pay a TCP handshake), Buffer bodies with an explicit length (radosgw refuses the chunked
// uploads SDKs send by default), a timeout on every request, and retries of what is transient.

export interface HttpRequest {
  method: "GET" | "HEAD" | "PUT" | "POST" | "DELETE";
  url: URL;
  headers: Record<string, string>;
  body?: Buffer;
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
    if (req.body) headers["content-length"] = String(req.body.length);
    else if (req.method === "PUT" || req.method === "POST") headers["content-length"] = "0";
    const r = lib.request(req.url, { method: req.method, headers, agent: req.url.protocol === "https:" ? agents.https : agents.http });
    const timer = setTimeout(() => r.destroy(new TransportError(`no answer within ${Math.round(timeoutMs / 1000)} s`, "ETIMEDOUT")), timeoutMs);
    r.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks) });
      });
      res.on("error", (err) => {
        clearTimeout(timer);
        reject(new TransportError(err.message, (err as NodeJS.ErrnoException).code));
      });
    });
    r.on("error", (err) => {
      clearTimeout(timer);
      reject(err instanceof TransportError ? err : new TransportError(err.message, (err as NodeJS.ErrnoException).code));
    });
    r.end(req.body);
  });
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
