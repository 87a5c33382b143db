import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { ROOT } from "./pulumi";
import { freePort } from "./daemon";
import { tempDir } from "./env";

/** Why Ceph cannot run here, or undefined when it can (make setup installs it as root). */
export function cephMissing(): string | undefined {
  const tools = ["ceph-mon", "ceph-osd", "ceph-mgr", "ceph", "rbd", "qemu-nbd"];
  const missing = tools.filter((t) => spawnSync("sh", ["-c", `command -v ${t}`]).status !== 0);
  return missing.length ? `Ceph is not installed (${missing.join(", ")} missing); make setup installs it as root` : undefined;
}

/** Skips a test, saying why, where Ceph cannot run. */
export function needsCeph(t: TestContext): boolean {
  const why = cephMissing();
  if (why) t.skip(why);
  return why !== undefined;
}

/** radosgw's S3 and Swift APIs on a cluster started with `{ rgw: true }`, and the keys up.sh generated. */
export interface RadosGatewayAccess {
  /** The S3 endpoint, http://127.0.0.1:PORT (path-style buckets). */
  endpoint: string;
  accessKey: string;
  secretKey: string;
  /** Swift's v1 auth, http://127.0.0.1:PORT/auth/1.0, for the subuser `swiftUser`. */
  swiftAuthUrl: string;
  swiftUser: string;
  swiftKey: string;
}

export interface CephClusterOptions {
  /** Also radosgw on a port of its own, with an S3 user and a Swift subuser. */
  rgw?: boolean;
  /** More environment for up.sh (CEPH_OSD_SIZE_GIB, say). */
  env?: Record<string, string>;
}

/**
 * A throwaway single-node cluster from scripts/ceph/up.sh: mon, mgr and one bluestore OSD on
 * 127.0.0.1, with a restricted client `kindling` (`profile rbd`) on the given pools (none: no
 * rbd pool and no such client), and radosgw when asked for.
 */
export class CephCluster {
  private constructor(
    readonly dir: string,
    readonly conf: string,
    readonly keyring: string,
    readonly monHost: string,
    /** radosgw, when the cluster was started with `{ rgw: true }`. */
    readonly rgw: RadosGatewayAccess | undefined,
  ) {}

  static async start(pools: string[] = ["volumes"], opts: CephClusterOptions = {}): Promise<CephCluster> {
    const dir = join(tempDir("kindling-ceph-"), "cluster");
    const port = await freePort();
    const v2 = await freePort();
    const env: NodeJS.ProcessEnv = { ...process.env, CEPH_MON_PORT: String(port), CEPH_MON_V2_PORT: String(v2), ...opts.env };
    delete env.CEPH_RGW_PORT;
    delete env.CEPH_POOLS;
    if (opts.rgw) env.CEPH_RGW_PORT = String(await freePort());
    if (pools.length === 0) env.CEPH_POOLS = "none";
    const r = spawnSync(join(ROOT, "scripts", "ceph", "up.sh"), [dir, ...pools], { env, encoding: "utf8" });
    if (r.status !== 0) {
      // up.sh does not stop what it started before the step that failed.
      spawnSync(join(ROOT, "scripts", "ceph", "down.sh"), [dir]);
      throw new Error(`ceph up.sh failed (${r.status}): ${r.stdout}\n${r.stderr}`);
    }
    return new CephCluster(dir, join(dir, "ceph.conf"), join(dir, "kindling.keyring"), `127.0.0.1:${port}`, opts.rgw ? rgwAccess(r.stdout) : undefined);
  }

  /** The restricted client's key, as `ceph auth print-key` would print it. */
  get key(): string {
    return /key\s*=\s*(\S+)/.exec(readFileSync(this.keyring, "utf8"))?.[1] ?? "";
  }

  /** An admin command (client.admin through the cluster's conf). */
  admin(command: string, args: string[]): string {
    return execFileSync(command, ["--conf", this.conf, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  }

  rbdJson<T>(args: string[]): T {
    return JSON.parse(this.admin("rbd", [...args, "--format", "json"])) as T;
  }

  /** The OSD's pid, to stop and start it in fault tests. */
  osdPid(): number {
    return Number(readFileSync(join(this.dir, "run", "osd.0.pid"), "utf8").trim());
  }

  /** A backend config for the restricted client. */
  backend(name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
    return { name, driver: "rbd", pool: "volumes", monHost: this.monHost, user: "kindling", key: this.key, ...extra };
  }

  /** The pids of the cluster's daemons (radosgw's too), from the pid files up.sh's conf names. */
  pids(): number[] {
    const run = join(this.dir, "run");
    if (!existsSync(run)) return [];
    return readdirSync(run)
      .filter((name) => name.endsWith(".pid"))
      .map((name) => Number(readFileSync(join(run, name), "utf8").trim()));
  }

  stop(): void {
    spawnSync(join(ROOT, "scripts", "ceph", "down.sh"), [this.dir]);
  }
}

/** radosgw's access from up.sh's shell assignments; the keys from the files they name. */
function rgwAccess(stdout: string): RadosGatewayAccess {
  const value = (name: string): string => {
    const found = new RegExp(`^${name}=(.*)$`, "m").exec(stdout)?.[1];
    if (found === undefined) throw new Error(`ceph up.sh printed no ${name}: ${stdout}`);
    return found;
  };
  const key = (name: string) => readFileSync(value(name), "utf8").trim();
  return {
    endpoint: value("KINDLING_RGW_ENDPOINT"),
    accessKey: key("KINDLING_RGW_ACCESS_KEY_FILE"),
    secretKey: key("KINDLING_RGW_SECRET_KEY_FILE"),
    swiftAuthUrl: value("KINDLING_RGW_SWIFT_AUTH_URL"),
    swiftUser: value("KINDLING_RGW_SWIFT_USER"),
    swiftKey: key("KINDLING_RGW_SWIFT_KEY_FILE"),
  };
}
