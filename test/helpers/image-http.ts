// A loopback http(s) server for image sources in tests, serving the files of one directory on
// 127.0.0.1 the way web servers do (HEAD, Range, ETag, Content-Length), and misbehaving on
// request where real servers and networks do:
//   /drop/NAME       sends half the body under the full Content-Length, then closes
//   /stall/NAME      sends half the body, then nothing more
//   /pause/NAME      sends half the body, waits half a second, then sends the rest
//   /norange/NAME    ignores Range (answers 200 with the whole body)
//   /nohead/NAME     answers HEAD with 405
//   /hop/N/NAME      redirects N times before serving NAME
//   /to/URL          redirects to URL (percent-encoded)
//   /md5/NAME        adds a Content-MD5 header (of the whole file)
import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";

export interface ImageServer {
  url: string;
  /** Requests seen, as "METHOD path [range]". */
  seen: string[];
  close(): Promise<void>;
}

export async function startImageServer(root: string, tls?: { key: string; cert: string }): Promise<ImageServer> {
  const seen: string[] = [];
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    seen.push(`${req.method} ${req.url}${req.headers.range ? ` ${req.headers.range}` : ""}`);
    let path = decodeURIComponent((req.url ?? "/").split("?")[0]);
    const mode = new Set<string>();
    for (;;) {
      const hop = /^\/hop\/(\d+)\/(.*)$/.exec(path);
      if (hop) {
        const n = Number(hop[1]);
        res.writeHead(302, { location: n > 1 ? `/hop/${n - 1}/${hop[2]}` : `/${hop[2]}` }).end();
        return;
      }
      const to = /^\/to\/(.*)$/.exec(path);
      if (to) {
        res.writeHead(302, { location: to[1] }).end();
        return;
      }
      const m = /^\/(drop|stall|pause|norange|nohead|md5)\/(.*)$/.exec(path);
      if (!m) break;
      mode.add(m[1]);
      path = `/${m[2]}`;
    }
    let body: Buffer;
    try {
      if (!statSync(join(root, path)).isFile()) throw new Error("not a file");
      body = readFileSync(join(root, path));
    } catch {
      res.writeHead(404).end();
      return;
    }
    const etag = `"${createHash("sha256").update(body).digest("hex").slice(0, 16)}"`;
    const headers: Record<string, string> = { etag, "accept-ranges": mode.has("norange") ? "none" : "bytes" };
    if (mode.has("md5")) headers["content-md5"] = createHash("md5").update(body).digest("base64");
    if (req.method === "HEAD") {
      if (mode.has("nohead")) res.writeHead(405).end();
      else res.writeHead(200, { ...headers, "content-length": String(body.length) }).end();
      return;
    }
    let start = 0;
    let status = 200;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
    if (range && !mode.has("norange")) {
      start = Number(range[1]);
      const end = range[2] ? Math.min(Number(range[2]), body.length - 1) : body.length - 1;
      headers["content-range"] = `bytes ${start}-${end}/${body.length}`;
      body = body.subarray(start, end + 1);
      status = 206;
    }
    res.writeHead(status, { ...headers, "content-length": String(body.length) });
    if (mode.has("drop")) {
      res.write(body.subarray(0, Math.floor(body.length / 2)), () => res.destroy());
    } else if (mode.has("stall")) {
      res.write(body.subarray(0, Math.floor(body.length / 2)));
    } else if (mode.has("pause")) {
      const half = Math.floor(body.length / 2);
      res.write(body.subarray(0, half));
      setTimeout(() => res.end(body.subarray(half)), 500);
    } else res.end(body);
  };
  const server = tls ? https.createServer({ key: tls.key, cert: tls.cert }, handler) : http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `${tls ? "https" : "http"}://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
