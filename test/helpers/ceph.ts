import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
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

/**
 * A throwaway single-node cluster from scripts/ceph/up.sh: mon, mgr and one bluestore OSD on
 * 127.0.0.1, with a restricted client `kindling` (`profile rbd`) on the given pools.
 */
export class CephCluster {
  private constructor(
    readonly dir: string,
    readonly conf: string,
    readonly keyring: string,
    readonly monHost: string,
  ) {}

  static async start(pools: string[] = ["volumes"], env: Record<string, string> = {}): Promise<CephCluster> {
    const dir = join(tempDir("kindling-ceph-"), "cluster");
    const port = await freePort();
    const v2 = await freePort();
    const r = spawnSync(join(ROOT, "scripts", "ceph", "up.sh"), [dir, ...pools], {
      env: { ...process.env, CEPH_MON_PORT: String(port), CEPH_MON_V2_PORT: String(v2), ...env },
      encoding: "utf8",
    });
    if (r.status !== 0) throw new Error(`ceph up.sh failed (${r.status}): ${r.stdout}\n${r.stderr}`);
    return new CephCluster(dir, join(dir, "ceph.conf"), join(dir, "kindling.keyring"), `127.0.0.1:${port}`);
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

  stop(): void {
    spawnSync(join(ROOT, "scripts", "ceph", "down.sh"), [this.dir]);
  }
}
