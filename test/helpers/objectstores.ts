import { spawnSync } from "node:child_process";
import { createHash, createHmac } from "node:crypto";
import { accessSync, constants, existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import type { TestContext } from "node:test";
import { CephCluster } from "./ceph";
import { freePort } from "./daemon";
import { removeDir, tempDir } from "./env";
import { processes, type Proc } from "./processes";
import { ROOT } from "./pulumi";

/** Why radosgw and a Swift all-in-one cannot run here, or undefined when they can (make setup installs them as root). */
export function objectStoresMissing(): string | undefined {
  // scripts/ceph/up.sh's own programs (cephMissing() also wants qemu-nbd, which radosgw does not need).
  const programs = [
    ...["ceph-mon", "ceph-mgr", "ceph-osd", "ceph", "ceph-authtool", "monmaptool", "rbd", "uuidgen"].map((p) => `/usr/bin/${p}`),
    "/usr/bin/radosgw",
    "/usr/bin/radosgw-admin",
    "/usr/bin/swift-proxy-server",
    "/usr/bin/swift-account-server",
    "/usr/bin/swift-container-server",
    "/usr/bin/swift-object-server",
    "/usr/bin/memcached",
    "/usr/bin/curl",
  ].filter((p) => {
    try {
      accessSync(p, constants.X_OK);
      return false;
    } catch {
      return true;
    }
  });
  // scripts/ceph/up.sh warms radosgw up through it, with Debian's Python.
  if (spawnSync("/usr/bin/python3", ["-c", "import swiftclient"]).status !== 0) programs.push("python3-swiftclient");
  return programs.length ? `the object stores are not installed (${programs.join(", ")} missing); make setup installs them as root` : undefined;
}

/** Skips a test, saying why, where radosgw and Swift cannot run. */
export function needsObjectStores(t: TestContext): boolean {
  const why = objectStoresMissing();
  if (why) t.skip(why);
  return why !== undefined;
}

/** S3 credentials and where they apply. */
export interface S3Access {
  endpoint: string;
  accessKey: string;
  secretKey: string;
  /** Any name does for radosgw; part of the signature all the same. */
  region?: string;
}

/** Swift v1 credentials (tempauth on the all-in-one, radosgw's own Swift auth). */
export interface SwiftCredentials {
  authUrl: string;
  user: string;
  key: string;
}

/** The process records of `pids` now (start time included, to tell them from later ones with the same pid). */
function procsOf(pids: number[]): Proc[] {
  return processes().filter((p) => pids.includes(p.pid));
}

/**
 * radosgw on a throwaway single-node cluster (CephCluster with `{ rgw: true }` and no rbd pool):
 * S3 on `endpoint`, Swift on `swiftAuthUrl`, for a user whose keys up.sh generated.
 */
export class RadosGateway implements S3Access {
  /** The cluster's daemons as they were once started, for "nothing left running" checks. */
  readonly procs: Proc[];

  private constructor(readonly cluster: CephCluster) {
    this.procs = procsOf(cluster.pids());
  }

  static async start(): Promise<RadosGateway> {
    return new RadosGateway(await CephCluster.start([], { rgw: true }));
  }

  private get access() {
    if (!this.cluster.rgw) throw new Error("the cluster has no radosgw");
    return this.cluster.rgw;
  }
  get endpoint(): string {
    return this.access.endpoint;
  }
  get accessKey(): string {
    return this.access.accessKey;
  }
  get secretKey(): string {
    return this.access.secretKey;
  }
  get swiftAuthUrl(): string {
    return this.access.swiftAuthUrl;
  }
  get swiftUser(): string {
    return this.access.swiftUser;
  }
  get swiftKey(): string {
    return this.access.swiftKey;
  }
  get swift(): SwiftCredentials {
    return { authUrl: this.swiftAuthUrl, user: this.swiftUser, key: this.swiftKey };
  }

  /** SIGKILL to every daemon by pid file, radosgw first; removes the cluster's directory. Safe twice. */
  stop(): void {
    this.cluster.stop();
    removeDir(dirname(this.cluster.dir));
  }
}

/**
 * A throwaway Swift all-in-one from scripts/swift/up.sh (Debian's swift 2.30, tempauth, one
 * replica), every process on 127.0.0.1 on ports of its own, data in a temp dir.
 */
export class SwiftAio implements SwiftCredentials {
  /** Its processes (proxy, account, container, object servers, memcached) as they were started. */
  readonly procs: Proc[];

  private constructor(
    readonly dir: string,
    private readonly parent: string,
    readonly authUrl: string,
    readonly user: string,
    readonly key: string,
  ) {
    const run = join(dir, "run");
    this.procs = procsOf(readdirSync(run).map((name) => Number(readFileSync(join(run, name), "utf8").trim())));
  }

  static async start(): Promise<SwiftAio> {
    const parent = tempDir("kindling-swift-");
    const dir = join(parent, "swift");
    const [proxy, account, container, object, memcached] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
    const r = spawnSync(join(ROOT, "scripts", "swift", "up.sh"), [dir], {
      env: {
        ...process.env,
        SWIFT_PORT: String(proxy),
        SWIFT_ACCOUNT_PORT: String(account),
        SWIFT_CONTAINER_PORT: String(container),
        SWIFT_OBJECT_PORT: String(object),
        SWIFT_MEMCACHED_PORT: String(memcached),
      },
      encoding: "utf8",
    });
    if (r.status !== 0) {
      // up.sh stopped what it started; its files (and logs, printed below) stay.
      removeDir(parent);
      throw new Error(`swift up.sh failed (${r.status}): ${r.stdout}\n${r.stderr}`);
    }
    const value = (name: string): string => {
      const found = new RegExp(`^${name}=(.*)$`, "m").exec(r.stdout)?.[1];
      if (found === undefined) throw new Error(`swift up.sh printed no ${name}: ${r.stdout}`);
      return found;
    };
    const key = readFileSync(value("KINDLING_SWIFT_KEY_FILE"), "utf8").trim();
    return new SwiftAio(dir, parent, value("KINDLING_SWIFT_AUTH_URL"), value("KINDLING_SWIFT_USER"), key);
  }

  /** SIGTERM by pid (SIGKILL after 10 s) to every process, waits until they are gone, removes the data. Safe twice. */
  stop(): void {
    if (existsSync(this.dir)) {
      const r = spawnSync(join(ROOT, "scripts", "swift", "down.sh"), [this.dir], { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`swift down.sh failed (${r.status}): ${r.stderr}`);
    }
    removeDir(this.parent);
  }
}

// ---- S3 requests signed with AWS Signature Version 4, without an SDK

const sha256 = (data: string) => createHash("sha256").update(data).digest("hex");
const hmac = (key: Buffer | string, data: string) => createHmac("sha256", key).update(data).digest();
/** RFC 3986 encoding as SigV4 wants it: everything but unreserved characters. */
const encode = (s: string) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

/**
 * The headers that sign a request with SigV4 (Authorization, x-amz-date, x-amz-content-sha256),
 * with the payload unsigned (UNSIGNED-PAYLOAD: the body is not hashed, so its size costs nothing
 * to sign). Every header in `headers` is signed; Host is taken from the URL, as fetch sends it.
 */
export function signV4(access: S3Access, method: string, url: URL, headers: Record<string, string> = {}, now = new Date()): Record<string, string> {
  const amzDate = now.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
  const day = amzDate.slice(0, 8);
  const region = access.region ?? "us-east-1";
  const scope = `${day}/${region}/s3/aws4_request`;
  const all: Record<string, string> = { ...headers, "x-amz-date": amzDate, "x-amz-content-sha256": "UNSIGNED-PAYLOAD" };
  const canonical = new Map<string, string>([["host", url.host]]);
  for (const [name, value] of Object.entries(all)) canonical.set(name.toLowerCase(), String(value).trim().replace(/\s+/g, " "));
  const names = [...canonical.keys()].sort();
  const signedHeaders = names.join(";");
  // The path as sent, each segment encoded once (S3 does not encode twice).
  const path = url.pathname.split("/").map((seg) => encode(decodeURIComponent(seg))).join("/");
  const query = [...url.searchParams.entries()]
    .map(([k, v]) => [encode(k), encode(v)])
    .sort(([a, x], [b, y]) => (a === b ? (x < y ? -1 : 1) : a < b ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
  const request = [method, path, query, ...names.map((n) => `${n}:${canonical.get(n)}`), "", signedHeaders, "UNSIGNED-PAYLOAD"].join("\n");
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256(request)].join("\n");
  const key = hmac(hmac(hmac(hmac(`AWS4${access.secretKey}`, day), region), "s3"), "aws4_request");
  const signature = createHmac("sha256", key).update(toSign).digest("hex");
  return {
    ...all,
    authorization: `AWS4-HMAC-SHA256 Credential=${access.accessKey}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`,
  };
}

/** A signed S3 request, path-style: `path` is `/bucket` or `/bucket/key`, with any query. */
export async function s3(access: S3Access, method: string, path: string, opts: { headers?: Record<string, string>; body?: Buffer | string } = {}): Promise<Response> {
  const url = new URL(path, access.endpoint);
  const headers = signV4(access, method, url, opts.headers);
  return fetch(url, { method, headers, body: opts.body });
}

// ---- Swift

/** A Swift session: v1 auth's token and storage URL. */
export interface SwiftSession {
  token: string;
  storageUrl: string;
}

/** Swift v1 auth (GET with X-Auth-User and X-Auth-Key); throws with the status when refused. */
export async function swiftAuth(creds: SwiftCredentials): Promise<SwiftSession> {
  const r = await swiftAuthResponse(creds);
  await r.arrayBuffer();
  const token = r.headers.get("x-auth-token");
  const storageUrl = r.headers.get("x-storage-url");
  if (r.status >= 300 || !token || !storageUrl) throw new Error(`swift auth at ${creds.authUrl} answered ${r.status}`);
  return { token, storageUrl };
}

/** The bare answer to Swift v1 auth, for tests of refusals. */
export function swiftAuthResponse(creds: SwiftCredentials): Promise<Response> {
  return fetch(creds.authUrl, { headers: { "X-Auth-User": creds.user, "X-Auth-Key": creds.key } });
}

/** A request with the session's token; `path` is relative to the storage URL (`container/object`). */
export function swift(session: SwiftSession, method: string, path: string, opts: { headers?: Record<string, string>; body?: Buffer | string } = {}): Promise<Response> {
  return fetch(`${session.storageUrl}/${path}`, { method, headers: { "X-Auth-Token": session.token, ...opts.headers }, body: opts.body });
}
