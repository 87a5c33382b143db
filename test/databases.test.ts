// The throwaway PostgreSQL and MariaDB servers the postgres and mysql record stores run against
// (scripts/postgres, scripts/mariadb, through test/helpers/databases.ts), checked from outside with
// the real clients psql and mariadb: kindling's password login over TCP and nothing else, on
// 127.0.0.1 only, data kept across restart() and a kill(), TLS verified against the server's own
// CA, and nothing left behind by stop().
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync, realpathSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { DatabaseServer, databasesMissing, type DatabaseKind } from "./helpers/databases";
import { needsRoot } from "./helpers/env";
import { makeFilesystem } from "./helpers/filesystems";
import { processes, stillRunning } from "./helpers/processes";

interface Result {
  code: number | null;
  out: string;
  err: string;
}

/**
 * SQL as kindling over TCP, with the password in the client's environment (never its arguments).
 * With `ca`, TLS is required and the server's certificate checked against it, name included.
 */
function login(server: DatabaseServer, sql: string, opts: { password?: string; ca?: string } = {}): Result {
  const password = opts.password ?? server.password;
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.PGPASSWORD;
  delete env.MYSQL_PWD;
  let command: string;
  let args: string[];
  if (server.kind === "postgres") {
    command = "psql";
    const tls = opts.ca ? ` sslmode=verify-full sslrootcert=${opts.ca}` : "";
    args = ["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1", `host=127.0.0.1 port=${server.port} user=kindling dbname=kindling${tls}`];
    env.PGPASSWORD = password;
  } else {
    command = "mariadb";
    const tls = opts.ca ? ["--ssl", `--ssl-ca=${opts.ca}`, "--ssl-verify-server-cert"] : [];
    args = ["--no-defaults", "--protocol=TCP", "-h", "127.0.0.1", "-P", String(server.port), "-u", "kindling", "-N", "-B", ...tls, "kindling"];
    env.MYSQL_PWD = password;
  }
  const r = spawnSync(command, args, { input: sql, env, encoding: "utf8", timeout: 30_000 });
  return { code: r.status, out: r.stdout.trim(), err: r.stderr };
}

/** The local addresses of the sockets `pids` listen on, as `ss` lists them (-t TCP, -x unix). */
function listening(pids: number[], family: "-t" | "-x"): string[] {
  const out = spawnSync("ss", ["-l", family, "-n", "-p", "-H"], { encoding: "utf8" }).stdout;
  const found: string[] = [];
  for (const line of out.split("\n")) {
    const owners = [...line.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1]));
    if (!owners.some((pid) => pids.includes(pid))) continue;
    // TCP: State Recv-Q Send-Q Local Peer; unix: Netid State Recv-Q Send-Q Local ...
    const fields = line.trim().split(/\s+/);
    found.push(family === "-t" ? fields[3] : fields[4]);
  }
  return found;
}

const REFUSED: Record<DatabaseKind, RegExp> = {
  postgres: /password authentication failed for user "kindling"/,
  mysql: /Access denied for user 'kindling'@'127\.0\.0\.1'/,
};

test("databasesMissing names the missing programs, their packages, and make setup", () => {
  const path = process.env.PATH;
  process.env.PATH = "/nonexistent";
  try {
    const why = databasesMissing() ?? "";
    assert.match(why, /postgresql \(psql missing\)/);
    assert.match(why, /mariadb-server \(mariadb-install-db, mariadb missing\)/);
    assert.match(why, /make setup installs them as root/);
    assert.doesNotMatch(databasesMissing("postgres") ?? "", /mariadb/);
  } finally {
    process.env.PATH = path;
  }
});

/** A process's command line; empty when it ended meanwhile (a server's short-lived workers do). */
function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT" || (err as NodeJS.ErrnoException).code === "ESRCH") return "";
    throw err;
  }
}

for (const kind of ["postgres", "mysql"] as const) {
  const skip = databasesMissing(kind);

  describe(`${kind} server`, { skip }, () => {
    let server: DatabaseServer;
    /** Every server a test started, stopped at the end even when the test failed halfway. */
    const started: DatabaseServer[] = [];
    const start = async (opts: Parameters<typeof DatabaseServer.start>[1] = {}) => {
      const s = await DatabaseServer.start(kind, opts);
      started.push(s);
      return s;
    };

    before(async () => {
      server = await start();
    });
    after(async () => {
      for (const s of started) await s.stop();
    });

    test("kindling logs in over TCP with its password, and with no other", () => {
      const ok = login(server, kind === "postgres" ? "select current_user" : "select current_user()");
      assert.equal(ok.code, 0, ok.err);
      assert.match(ok.out, /^kindling(@127\.0\.0\.1)?$/);

      const wrong = login(server, "select 1", { password: `${server.password}x` });
      assert.notEqual(wrong.code, 0);
      assert.match(wrong.err, REFUSED[kind]);

      assert.equal(readFileSync(join(server.dir, "password"), "utf8").trim(), server.password);
      assert.equal(statSync(join(server.dir, "password")).mode & 0o777, 0o600);
      assert.match(server.password, /^[0-9a-f]{48}$/);
      const scheme = kind === "postgres" ? "postgres" : "mysql";
      assert.deepEqual(server.persistence(), { storage: kind, url: `${scheme}://kindling@127.0.0.1:${server.port}/kindling`, password: server.password });
    });

    test("kindling is no superuser, and mysql2 can speak its authentication", () => {
      if (kind === "postgres") {
        assert.equal(server.admin("select rolsuper, rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname = 'kindling'").trim(), "f|t");
      } else {
        assert.equal(server.admin("select plugin from mysql.user where user = 'kindling' and host = '127.0.0.1'").trim(), "mysql_native_password");
        const other = login(server, "create database elsewhere");
        assert.notEqual(other.code, 0);
        assert.match(other.err, /Access denied/);
      }
    });

    test("the password is on no command line and in no log", () => {
      const pids = server.processes();
      assert.ok(pids.includes(server.pid), `the main process ${server.pid} is among ${pids.join(",")}`);
      for (const pid of pids) assert.ok(!commandLine(pid).includes(server.password), `pid ${pid}`);
      for (const log of readdirSync(server.dir).filter((f) => f.endsWith(".log"))) {
        assert.ok(!readFileSync(join(server.dir, log), "utf8").includes(server.password), log);
      }
    });

    test("it listens on 127.0.0.1:PORT only, and on a unix socket in its directory", () => {
      const pids = server.processes();
      const tcp = listening(pids, "-t");
      assert.ok(tcp.length > 0, "a TCP listener");
      for (const address of tcp) assert.equal(address, `127.0.0.1:${server.port}`);
      const unix = listening(pids, "-x");
      assert.ok(unix.length > 0, "a unix socket");
      for (const path of unix) assert.equal(dirname(path), realpathSync(server.dir));
    });

    test("restart() keeps the data, the port and the password", async () => {
      const setup = login(server, "create table records (id int primary key, body text); insert into records values (1, 'before restart');");
      assert.equal(setup.code, 0, setup.err);
      const before = server.pid;

      await server.restart();

      assert.notEqual(server.pid, before);
      assert.ok(server.isRunning());
      assert.ok(!server.processes().includes(before));
      assert.equal(readFileSync(join(server.dir, "password"), "utf8").trim(), server.password);
      const read = login(server, "select body from records where id = 1");
      assert.equal(read.code, 0, read.err);
      assert.equal(read.out, "before restart");
    });

    test("kill() is a crash: the server is gone at once, and restart() recovers its data", async () => {
      await server.kill();
      assert.ok(!server.isRunning());
      const refused = login(server, "select 1");
      assert.notEqual(refused.code, 0);

      await server.restart();

      const read = login(server, "select body from records where id = 1");
      assert.equal(read.code, 0, read.err);
      assert.equal(read.out, "before restart");
    });

    test("after kill(), a fresh server starts and works", async () => {
      const doomed = await start();
      await doomed.kill();
      assert.ok(!doomed.isRunning());

      const fresh = await start();
      assert.notEqual(fresh.port, doomed.port);
      assert.notEqual(fresh.password, doomed.password);
      const ok = login(fresh, "select 1");
      assert.equal(ok.code, 0, ok.err);
      assert.equal(ok.out, "1");
    });

    test("durable: a commit acknowledged just before a kill() is there after restart()", async () => {
      const durable = await start({ durable: true });
      const write = login(durable, "create table records (id int primary key); insert into records values (7);");
      assert.equal(write.code, 0, write.err);
      await durable.kill();

      await durable.restart();

      const read = login(durable, "select id from records");
      assert.equal(read.code, 0, read.err);
      assert.equal(read.out, "7");
    });

    test("with tls, the certificate verifies against the server's CA and no other", async () => {
      const secure = await start({ tls: true });
      assert.ok(secure.ca && existsSync(secure.ca));
      assert.deepEqual(secure.persistence().tls, { ca: secure.ca });

      const sql = kind === "postgres" ? "select ssl from pg_stat_ssl where pid = pg_backend_pid()" : "show status like 'Ssl_cipher'";
      const ok = login(secure, sql, { ca: secure.ca });
      assert.equal(ok.code, 0, ok.err);
      if (kind === "postgres") assert.equal(ok.out, "t");
      else assert.match(ok.out, /^Ssl_cipher\t\S+/);

      // The machine's public CAs never signed this server's certificate.
      const stranger = login(secure, "select 1", { ca: "/etc/ssl/certs/ca-certificates.crt" });
      assert.notEqual(stranger.code, 0);
      assert.match(stranger.err, /certificate verify failed|unable to get local issuer certificate/);
    });

    test("dataDir: the server lives on a filesystem of its own, which stop() leaves in place", async (t) => {
      if (needsRoot(t)) return;
      const small = makeFilesystem("ext4", 128);
      let onSmall: DatabaseServer | undefined;
      try {
        onSmall = await start({ dataDir: small.mountpoint });
        assert.equal(dirname(onSmall.dir), small.mountpoint);
        assert.notEqual(statSync(small.mountpoint).dev, statSync(dirname(small.mountpoint)).dev);
        assert.equal(statSync(join(onSmall.dir, "data")).dev, statSync(small.mountpoint).dev);
        const ok = login(onSmall, "select 1");
        assert.equal(ok.code, 0, ok.err);

        await onSmall.stop();

        assert.ok(!onSmall.isRunning());
        assert.deepEqual(readdirSync(small.mountpoint), ["lost+found"]);
      } finally {
        // Stopped before the unmount: a busy mount would go lazily, and hide the server from stop().
        await onSmall?.stop();
        small.remove();
      }
    });

    test("stop() leaves no process and no directory, and is safe twice", async () => {
      const pids = server.processes();
      const procs = processes().filter((p) => pids.includes(p.pid));
      assert.ok(procs.length > 0);
      const parent = dirname(server.dir);

      await server.stop();

      assert.deepEqual(stillRunning(procs), []);
      assert.ok(!server.isRunning());
      assert.ok(!existsSync(server.dir));
      assert.ok(!existsSync(parent), "the temp dir around it");
      await server.stop();
    });
  });
}
