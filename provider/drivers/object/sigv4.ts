import { createHash, createHmac, createSecretKey, type KeyObject } from "node:crypto";

// AWS Signature Version 4 for S3 requests (the algorithm in AWS's "Signing AWS API requests"),
// with UNSIGNED-PAYLOAD: the body is not hashed into the signature, which saves a SHA-256 pass
// over every segment; its integrity is checked by the per-block checksums kindling stores.

const sha256hex = (data: string) => createHash("sha256").update(data).digest("hex");
const hmac = (key: Buffer | string, data: string) => createHmac("sha256", key).update(data).digest();

/** RFC 3986 encoding, as SigV4 wants it ('/' kept in paths). */
export function uriEncode(s: string, keepSlash: boolean): string {
  // encodeURIComponent leaves RFC 3986's unreserved characters and !'()* alone: those five are
  // escaped after. It refuses a lone surrogate, which the byte by byte way below encodes as
  // U+FFFD, as Buffer.from does; it is five times as fast, and every request encodes its key twice.
  let encoded: string;
  try {
    encoded = encodeURIComponent(s);
  } catch {
    return uriEncodeBytes(s, keepSlash);
  }
  encoded = encoded.replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
  return keepSlash ? encoded.replace(/%2F/g, "/") : encoded;
}

function uriEncodeBytes(s: string, keepSlash: boolean): string {
  let out = "";
  for (const ch of Buffer.from(s, "utf8")) {
    const c = String.fromCharCode(ch);
    if (/[A-Za-z0-9\-._~]/.test(c) || (keepSlash && c === "/")) out += c;
    else out += "%" + ch.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

export interface SigningKey {
  accessKey: string;
  secretKey: string;
  region: string;
}

// The signing key changes once a day: derived per request it was 13-14% of the NBD daemon's
// CPU in cold random reads (four HMACs each), so it is kept per key and day, as a KeyObject:
// an HMAC keyed by a Buffer makes one from it each time, which took 12 µs a request against 2.
const signingKeys = new WeakMap<SigningKey, { day: string; key: KeyObject }>();

function signingKey(key: SigningKey, day: string): KeyObject {
  const cached = signingKeys.get(key);
  if (cached?.day === day) return cached.key;
  const kDate = hmac(`AWS4${key.secretKey}`, day);
  const derived = createSecretKey(hmac(hmac(hmac(kDate, key.region), "s3"), "aws4_request"));
  signingKeys.set(key, { day, key: derived });
  return derived;
}

/** Adds host, x-amz-date, x-amz-content-sha256 and authorization to `headers`. */
export function signV4(method: string, url: URL, headers: Record<string, string>, key: SigningKey, now = new Date()): void {
  const amzDate = now.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
  const day = amzDate.slice(0, 8);
  headers["host"] = url.host;
  headers["x-amz-date"] = amzDate;
  headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD";
  const names = Object.keys(headers).map((h) => h.toLowerCase()).sort();
  const lower: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) lower[k.toLowerCase()] = String(v).trim().replace(/\s+/g, " ");
  const query = [...url.searchParams.entries()]
    .map(([k, v]) => [uriEncode(k, false), uriEncode(v, false)])
    .sort((a, b) => (a[0] === b[0] ? (a[1] < b[1] ? -1 : 1) : a[0] < b[0] ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
  const canonical = [
    method,
    uriEncode(decodeURIComponent(url.pathname), true),
    query,
    names.map((n) => `${n}:${lower[n]}\n`).join(""),
    names.join(";"),
    "UNSIGNED-PAYLOAD",
  ].join("\n");
  const scope = `${day}/${key.region}/s3/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256hex(canonical)].join("\n");
  const kSigning = signingKey(key, day);
  const signature = createHmac("sha256", kSigning).update(toSign).digest("hex");
  headers["authorization"] = `AWS4-HMAC-SHA256 Credential=${key.accessKey}/${scope}, SignedHeaders=${names.join(";")}, Signature=${signature}`;
}
