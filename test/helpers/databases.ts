import { execFile, execFileSync } from "node:child_process";
import { accessSync, constants, readFileSync, readlinkSync, readdirSync, realpathSync } from "node:fs";
import { userInfo } from "node:os";
import { delimiter, join } from "node:path";
import type { TestContext } from "node:test";
import { promisify } from "node:util";
import { freePort } from "./daemon";
import { removeDir, tempDir } from "./env";
import { ROOT } from "./pulumi";

/** The record stores with a database server: PostgreSQL, and MySQL's protocol served by MariaDB. */
export type DatabaseKind = "postgres" | "mysql";

/** What the postgres and mysql record stores take as their configuration. */
export interface DatabasePersistence {
  storage: DatabaseKind;
  url: string;
  password: string;
  tls?: { ca: string };
}

export interface DatabaseServerOptions {
  /** The server also offers TLS, with a certificate for 127.0.0.1 signed by a CA of its own (`ca`). */
  tls?: boolean;
  /** A directory (a small mounted filesystem, for full-disk tests) to make the server's directory in. */
  dataDir?: string;
  /** Every commit on disk before it returns. Without it a killed PostgreSQL loses its last 600 ms of commits. */
  durable?: boolean;
}

const PG_BIN = "/usr/lib/postgresql/15/bin";
const SCRIPTS: Record<DatabaseKind, string> = { postgres: join(ROOT, "scripts", "postgres"), mysql: join(ROOT, "scripts", "mariadb") };
const run = promisify(execFile);

/** `program` (a path, or a name looked up on PATH) can run. */
function runnable(program: string): boolean {
  // mariadbd lives in /usr/sbin, off a non-root PATH.
  const candidates = program.includes("/") ? [program] : [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin"].map((dir) => join(dir, program));
  return candidates.some((path) => {
    try {
      accessSync(path, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** Why a database server of `kind` (of both kinds when omitted) cannot run here, or undefined when it can. */
export function databasesMissing(kind?: DatabaseKind): string | undefined {
  const needs: { kind: DatabaseKind; pkg: string; programs: string[] }[] = [
    { kind: "postgres", pkg: "postgresql", programs: [join(PG_BIN, "initdb"), join(PG_BIN, "postgres"), "psql"] },
    { kind: "mysql", pkg: "mariadb-server", programs: ["mariadbd", "mariadb-install-db", "mariadb"] },
  ];
  const missing = needs
    .filter((n) => kind === undefined || n.kind === kind)
    .map((n) => ({ pkg: n.pkg, programs: n.programs.filter((p) => !runnable(p)) }))
    .filter((n) => n.programs.length > 0);
  if (!missing.length) return undefined;
  const what = missing.map((n) => `${n.pkg} (${n.programs.join(", ")} missing)`).join(" and ");
  return `the database servers are not installed: ${what}; make setup installs them as root`;
}

/** Skips a test, saying why, where a database server of `kind` (of both kinds when omitted) cannot run. */
export function needsDatabases(t: TestContext, kind?: DatabaseKind): boolean {
  const why = databasesMissing(kind);
  if (why) t.skip(why);
  return why !== undefined;
}

/**
 * A throwaway database server from scripts/postgres/up.sh or scripts/mariadb/up.sh: TCP on
 * 127.0.0.1 only, a database `kindling` and a user `kindling` who logs in with `password`, data
 * and unix socket in `dir`. Stopped by its pid; the superuser is reachable through `admin()`.
 */
export class DatabaseServer {
  private constructor(
    readonly kind: DatabaseKind,
    readonly dir: string,
    readonly port: number,
    readonly password: string,
    readonly ca: string | undefined,
    private serverPid: number,
    /** The temp dir this helper made around `dir`, removed with it; none under a caller's dataDir. */
    private readonly parent: string | undefined,
    /** The data directory, as the server's cwd shows it (symlinks resolved). */
    private readonly dataPath: string,
  ) {}

  static async start(kind: DatabaseKind, opts: DatabaseServerOptions = {}): Promise<DatabaseServer> {
    const port = await freePort();
    const parent = opts.dataDir === undefined ? tempDir(`kindling-${kind}-`) : undefined;
    const dir = join(opts.dataDir ?? (parent as string), `${kind}-${port}`);
    const ca = opts.tls ? join(dir, "tls", "ca.pem") : undefined;
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.TLS_DIR;
    delete env.DURABLE;
    if (opts.tls) env.TLS_DIR = join(dir, "tls");
    if (opts.durable) env.DURABLE = "1";
    let pid: number;
    try {
      pid = await DatabaseServer.up(kind, [dir, String(port)], env);
    } catch (err) {
      // up.sh left nothing running, but its directory (and the log it printed) stays: remove it.
      await run(join(SCRIPTS[kind], "down.sh"), [dir]).catch(() => undefined);
      if (parent) removeDir(parent);
      throw err;
    }
    const password = readFileSync(join(dir, "password"), "utf8").trim();
    return new DatabaseServer(kind, dir, port, password, ca, pid, parent, join(realpathSync(dir), "data"));
  }

  /** Runs up.sh, and returns the pid it printed. Its error carries the server's log. */
  private static async up(kind: DatabaseKind, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
    try {
      const { stdout } = await run(join(SCRIPTS[kind], "up.sh"), args, { env, encoding: "utf8", maxBuffer: 16 * 1024 * 1024 });
      const pid = Number(/^pid=(\d+)$/m.exec(stdout)?.[1]);
      if (!pid) throw new Error(`no pid in its output: ${stdout}`);
      return pid;
    } catch (err) {
      const e = err as Error & { stdout?: string; stderr?: string };
      throw new Error(`${kind} up.sh ${args.join(" ")} failed: ${e.message}\n${e.stdout ?? ""}${e.stderr ?? ""}`);
    }
  }

  /** The server's main process (the postmaster, or mariadbd). */
  get pid(): number {
    return this.serverPid;
  }

  /** The password is not in it: it travels apart, as the stores take it. */
  get url(): string {
    const scheme = this.kind === "postgres" ? "postgres" : "mysql";
    return `${scheme}://kindling@127.0.0.1:${this.port}/kindling`;
  }

  /** The configuration object a postgres or mysql record store takes for this server. */
  persistence(): DatabasePersistence {
    return { storage: this.kind, url: this.url, password: this.password, ...(this.ca ? { tls: { ca: this.ca } } : {}) };
  }

  /** The main process is alive (a zombie is not) and still this server's: it works in its data directory. */
  isRunning(): boolean {
    return this.worksHere(this.serverPid);
  }

  /** Every live process of the server: those working in its data directory (PostgreSQL has several). */
  processes(): number[] {
    return readdirSync("/proc")
      .filter((entry) => /^\d+$/.test(entry))
      .map(Number)
      .filter((pid) => this.worksHere(pid));
  }

  private worksHere(pid: number): boolean {
    try {
      return readlinkSync(`/proc/${pid}/cwd`) === this.dataPath;
    } catch {
      return false; // gone, or a zombie (whose cwd is unreadable)
    }
  }

  /** Stops the server (a clean shutdown, SIGKILL after 30 s), waits until it is gone, and removes its data. Safe twice. */
  async stop(): Promise<void> {
    await run(join(SCRIPTS[this.kind], "down.sh"), [this.dir]);
    if (this.parent) removeDir(this.parent);
  }

  /** SIGKILL to the main process, as a crash would; returns once it is gone. The data stays, for restart(). */
  async kill(): Promise<void> {
    try {
      process.kill(this.serverPid, "SIGKILL");
    } catch {
      // already gone
    }
    for (let i = 0; i < 500 && this.isRunning(); i++) await new Promise((resolve) => setTimeout(resolve, 20));
    if (this.isRunning()) throw new Error(`${this.kind} server ${this.serverPid} survived SIGKILL`);
  }

  /** Stops the server (if it runs) and starts it again on the same port, data and password. */
  async restart(): Promise<void> {
    await run(join(SCRIPTS[this.kind], "down.sh"), ["--keep", this.dir]);
    this.serverPid = await DatabaseServer.up(this.kind, ["--again", this.dir]);
  }

  /**
   * SQL as the superuser, over the unix socket in `dir` (peer or unix_socket authentication, no
   * password), in the `kindling` database; the output unaligned, without headers.
   */
  admin(sql: string): string {
    const [command, args] =
      this.kind === "postgres"
        ? ["psql", ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", this.dir, "-p", String(this.port), "-U", "postgres", "-d", "kindling"]]
        : ["mariadb", ["--no-defaults", "-S", join(this.dir, "mysqld.sock"), "-u", userInfo().username, "-N", "-B", "kindling"]];
    return execFileSync(command, args as string[], { input: sql, encoding: "utf8", stdio: ["pipe", "pipe", "pipe"] });
  }
}
