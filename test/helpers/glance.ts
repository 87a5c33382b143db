import { accessSync, constants, existsSync, readFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { freePort } from "./daemon";
import { removeDir, tempDir } from "./env";
import { ROOT } from "./pulumi";

/** Why a Glance cannot run here, or undefined when it can (make setup installs it as root). */
export function glanceMissing(): string | undefined {
  const programs = ["/usr/bin/glance-api", "/usr/bin/glance-manage", "/usr/bin/curl"].filter((p) => {
    try {
      accessSync(p, constants.X_OK);
      return false;
    } catch {
      return true;
    }
  });
  if (!existsSync("/etc/glance/glance-api-paste.ini")) programs.push("/etc/glance/glance-api-paste.ini");
  return programs.length ? `Glance is not installed (${programs.join(", ")} missing); make setup installs glance-api as root` : undefined;
}

/** Skips a test, saying why, where Glance cannot run. */
export function needsGlance(t: TestContext): boolean {
  const why = glanceMissing();
  if (why) t.skip(why);
  return why !== undefined;
}

/** Glance's rbd store: its images in `pool` of the cluster of `conf`, as client.`user` (key in `keyring`). */
export interface GlanceRbdStore {
  conf: string;
  keyring: string;
  user: string;
  pool: string;
}

/**
 * A throwaway Glance v2 from scripts/glance/up.sh (Debian's glance-api, no Keystone, the noauth
 * pipeline that trusts identity headers, sqlite and the file store, or with `rbd` the rbd store
 * of a Ceph cluster), on 127.0.0.1 on a port of its own, everything in a temp dir.
 */
export class GlanceServer {
  private constructor(
    readonly dir: string,
    private readonly parent: string,
    readonly endpoint: string,
  ) {}

  /**
   * `imageSizeCap`: the largest image it takes, in bytes (Glance's image_size_cap; 1 TiB unless
   * given). `rbd`: images in a Ceph pool instead of files (direct_url `rbd://FSID/POOL/ID/snap`).
   */
  static async start(opts: { imageSizeCap?: number; rbd?: GlanceRbdStore } = {}): Promise<GlanceServer> {
    const parent = tempDir("kindling-glance-");
    const dir = join(parent, "glance");
    const port = await freePort();
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const name of ["GLANCE_IMAGE_SIZE_CAP", "GLANCE_RBD_CONF", "GLANCE_RBD_KEYRING", "GLANCE_RBD_USER", "GLANCE_RBD_POOL"]) delete env[name];
    if (opts.imageSizeCap !== undefined) env.GLANCE_IMAGE_SIZE_CAP = String(opts.imageSizeCap);
    if (opts.rbd) {
      Object.assign(env, { GLANCE_RBD_CONF: opts.rbd.conf, GLANCE_RBD_KEYRING: opts.rbd.keyring, GLANCE_RBD_USER: opts.rbd.user, GLANCE_RBD_POOL: opts.rbd.pool });
    }
    const r = spawnSync(join(ROOT, "scripts", "glance", "up.sh"), [dir, String(port)], { env, encoding: "utf8" });
    if (r.status !== 0) {
      // up.sh stopped what it started; its logs are in its stderr.
      removeDir(parent);
      throw new Error(`glance up.sh failed (${r.status}): ${r.stdout}\n${r.stderr}`);
    }
    const endpoint = /^KINDLING_GLANCE_ENDPOINT=(.*)$/m.exec(r.stdout)?.[1];
    if (!endpoint) throw new Error(`glance up.sh printed no KINDLING_GLANCE_ENDPOINT: ${r.stdout}`);
    return new GlanceServer(dir, parent, endpoint);
  }

  /** glance-api's pid, as up.sh recorded it. */
  get pid(): number {
    return Number(readFileSync(join(this.dir, "run", "glance-api.pid"), "utf8").trim());
  }

  /** Where the file store keeps image data: an image's bytes are the file named by its id (empty with the rbd store). */
  get imagesDir(): string {
    return join(this.dir, "images");
  }

  /** SIGTERM by pid (SIGKILL after 10 s), waits until it is gone, removes the data. Safe twice. */
  stop(): void {
    if (existsSync(this.dir)) {
      const r = spawnSync(join(ROOT, "scripts", "glance", "down.sh"), [this.dir], { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`glance down.sh failed (${r.status}): ${r.stderr}`);
    }
    removeDir(this.parent);
  }
}
