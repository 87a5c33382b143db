import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BackendError, InUseError, InvalidInputError, KindlingError, NoSpaceError, errorMessage } from "../../util/errors";
import { run, type RunResult } from "../../util/run";
import { runtimeHome } from "../../util/paths";
import type { RbdConfig } from "./config";

/** rbd subcommands that print progress unless told not to. */
const PROGRESS_COMMANDS = new Set(["create", "rm", "resize", "flatten", "snap create", "snap rm"]);

/** Private directories holding key files, removed when the process exits. */
const privateDirs = new Set<string>();
process.once("exit", () => {
  for (const dir of privateDirs) rmSync(dir, { recursive: true, force: true });
});

/** Where key files go: `keys/` in KINDLING_RUNTIME_DIR, else in kindling's runtime home. */
function runtimeDir(): string {
  const base = join(process.env.KINDLING_RUNTIME_DIR || runtimeHome(), "keys");
  mkdirSync(base, { recursive: true, mode: 0o700 });
  return base;
}

const swept = new Set<string>();

/** A process killed by a signal leaves its key files: the next one removes them. */
function sweepStale(base: string): void {
  if (swept.has(base)) return;
  swept.add(base);
  for (const name of readdirSync(base)) {
    const pid = Number(/^[a-z-]+-(\d+)-/.exec(name)?.[1]);
    if (!pid || pid === process.pid) continue;
    try {
      process.kill(pid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ESRCH") rmSync(join(base, name), { recursive: true, force: true });
    }
  }
}

/** A directory only this user can enter (mkdtemp makes it 0700), removed at exit. */
export function privateDir(prefix: string): string {
  const base = runtimeDir();
  sweepStale(base);
  const dir = mkdtempSync(join(base, `${prefix}${process.pid}-`));
  privateDirs.add(dir);
  return dir;
}

export function removePrivateDir(dir: string): void {
  privateDirs.delete(dir);
  rmSync(dir, { recursive: true, force: true });
}

/** The key of `client.<user>` in a keyring file. */
export function keyFromKeyring(path: string, user: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new InvalidInputError("keyring", `cannot read ${path}: ${errorMessage(err)}`);
  }
  let section = "";
  for (const line of text.split("\n")) {
    const header = /^\s*\[([^\]]+)\]\s*$/.exec(line);
    if (header) section = header[1].trim();
    const key = /^\s*key\s*=\s*(\S+)\s*$/.exec(line);
    if (key && section === `client.${user}`) return key[1];
  }
  throw new InvalidInputError("keyring", `${path} holds no key for client.${user}`, { hint: "check the user setting, or export the keyring with `ceph auth get client.USER`" });
}

/**
 * `mon host` for a ceph.conf from "host:port,...". A bare address makes the tools try msgr2
 * first and wait out the whole timeout on a v1 port, so each is marked: 3300 is msgr2's port,
 * any other port is v1. Addresses already marked (v1:, v2:, [..]) are kept as given.
 */
export function monHostSetting(monHost: string): string {
  return monHost
    .split(",")
    .map((a) => a.trim())
    .filter(Boolean)
    .map((a) => (/^(v[12]:|\[)/.test(a) || !/:\d+$/.test(a) ? a : `${a.endsWith(":3300") ? "v2" : "v1"}:${a}`))
    .join(",");
}

/** How a failed Ceph command reads to a user: what went wrong and what to do about it. */
function translate(err: BackendError, what: string, user: string): KindlingError {
  const text = `${err.stderr ?? ""}\n${err.message}`;
  const opts = { command: err.command, stderr: err.stderr, cause: err };
  if (/\(2\) No such file or directory|error opening pool|pool .* does not exist|snapshot does not exist/i.test(text)) {
    return new KindlingError("NOT_FOUND", `cannot ${what}: no such image, snapshot or pool in the cluster`, { hint: "it was removed outside kindling, or the pool is wrong" });
  }
  if (/couldn't connect to the cluster|rados_connect/i.test(text) && /authenticate timed out|\(110\)/i.test(text) && !/handle_auth_bad_method/.test(text)) {
    return new BackendError(`could not reach the Ceph monitors as client.${user}`, { ...opts, hint: "check the monitors in cephConf or monHost, and that they are up (ceph -s)" });
  }
  if (/couldn't connect to the cluster|handle_auth_bad_method|rados_connect/i.test(text)) {
    return new BackendError(`Ceph refused client.${user}: authentication failed`, { ...opts, hint: "check the user and its key or keyring, and that the monitors in cephConf or monHost are right" });
  }
  if (/\(1\) Operation not permitted|\(13\) Permission denied/i.test(text)) {
    return new BackendError(`client.${user} is not allowed to ${what}`, { ...opts, hint: "grant the user `profile rbd pool=POOL` on this pool (ceph auth caps)" });
  }
  if (/\(110\) Connection timed out|timed out/i.test(text)) {
    return new BackendError(`Ceph did not answer while trying to ${what}`, { ...opts, hint: "are the monitors and OSDs up (ceph -s)? nothing was changed that kindling did not record" });
  }
  if (/\(28\) No space left|\(122\) Disk quota exceeded/i.test(text)) {
    return new NoSpaceError(`the Ceph pool is full while trying to ${what}`, { ...opts, hint: "free space in the pool, raise its quota, or use another pool" });
  }
  if (/has watchers|\(16\) Device or resource busy/i.test(text)) {
    return new InUseError(`cannot ${what}: the image is in use (${err.stderr?.split("\n").filter(Boolean).pop()?.trim() ?? "busy"})`, { hint: "detach it or stop what holds it open (an attachment, an NBD export, a VM)" });
  }
  return err;
}

/**
 * The credentials and command lines of one backend's cluster. The key goes to the tools in a
 * file of its own (`--keyfile`, qemu's secret object), never on a command line; monitors given
 * as `monHost` become a small ceph.conf, so every tool reads the cluster the same way.
 */
export class CephAccess {
  /** A ceph.conf every tool reads: the user's, or one made from monHost. */
  readonly confPath: string;
  /** A file holding the bare key, when the config gave a key or a keyring. */
  readonly keyFile?: string;
  /** The key itself, for connection info (consumers with librbd need it). */
  readonly key?: string;
  private readonly dir: string;

  constructor(private readonly config: RbdConfig) {
    // The keyring is read first: a refused one must not leave a private directory behind.
    const key = config.key ?? (config.keyring ? keyFromKeyring(config.keyring, config.user) : undefined);
    this.dir = privateDir("rbd-");
    if (key) {
      this.key = key;
      this.keyFile = join(this.dir, "key");
      writeFileSync(this.keyFile, key, { mode: 0o600 });
    }
    if (config.cephConf) {
      this.confPath = config.cephConf;
    } else {
      this.confPath = join(this.dir, "ceph.conf");
      writeFileSync(this.confPath, `[global]\nmon host = ${monHostSetting(config.monHost ?? "")}\n`, { mode: 0o600 });
    }
  }

  get user(): string {
    return this.config.user;
  }

  /** How long a Ceph tool, or a librbd client, waits for the cluster before it gives up. */
  get timeoutSeconds(): number {
    return this.config.timeoutSeconds;
  }

  /** Options every Ceph tool takes: cluster, user, key, and time limits so nothing hangs. */
  commonArgs(): string[] {
    const t = String(this.config.timeoutSeconds);
    return [
      "--conf", this.confPath,
      "--id", this.config.user,
      ...(this.keyFile ? ["--keyfile", this.keyFile] : []),
      "--client-mount-timeout", t,
      "--rados-mon-op-timeout", t,
      "--rados-osd-op-timeout", t,
    ];
  }

  /** Runs `rbd`; a failure becomes a typed error saying what could not be done. */
  async rbd(args: string[], what: string): Promise<RunResult> {
    // Progress lines would fill the stderr kept in errors; only some subcommands take the flag.
    const quiet = PROGRESS_COMMANDS.has(args[0]) || (args[0] === "snap" && PROGRESS_COMMANDS.has(`snap ${args[1]}`));
    return this.tool("rbd", [...this.commonArgs(), ...args, ...(quiet ? ["--no-progress"] : [])], what);
  }

  async rbdJson<T>(args: string[], what: string): Promise<T> {
    const { stdout } = await this.rbd([...args, "--format", "json"], what);
    return JSON.parse(stdout || "null") as T;
  }

  async cephJson<T>(args: string[], what: string): Promise<T> {
    const { stdout } = await this.tool("ceph", [...this.commonArgs(), "--format", "json", ...args], what);
    return JSON.parse(stdout) as T;
  }

  /** Runs `ceph` (no output format asked for). */
  async cephCommand(args: string[], what: string): Promise<RunResult> {
    return this.tool("ceph", [...this.commonArgs(), ...args], what);
  }

  /**
   * Creates or updates the users of a keyring (`ceph auth import`): the keyring, keys and all,
   * goes in a file of its own, removed once read, never on a command line.
   */
  async importKeyring(keyring: string, what: string): Promise<void> {
    const dir = privateDir("import-");
    try {
      const file = join(dir, "keyring");
      writeFileSync(file, keyring, { mode: 0o600 });
      await this.tool("ceph", [...this.commonArgs(), "auth", "import", "-i", file], what);
    } finally {
      removePrivateDir(dir);
    }
  }

  private async tool(command: string, args: string[], what: string): Promise<RunResult> {
    // The tools give up by themselves after timeoutSeconds; this is the backstop.
    const timeoutMs = (this.config.timeoutSeconds * 2 + 15) * 1000;
    try {
      return await run(command, args, { timeoutMs, secrets: this.key ? [this.key] : [] });
    } catch (err) {
      // run() has typed out of space already; the rest is read from Ceph's stderr.
      if (err instanceof BackendError && err.code === "BACKEND_ERROR") throw translate(err, what, this.config.user);
      throw err;
    }
  }

  /** Removes the key file and any conf made here. */
  close(): void {
    removePrivateDir(this.dir);
  }
}
