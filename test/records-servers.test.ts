// The records stores in a database server, as their users meet them: a wrong password, a server
// that cannot be reached or does not answer, a server that restarts or crashes mid-operation,
// TLS, and a schema made by an earlier version, upgraded by two processes at once.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createServer, type Server } from "node:net";
import { unlinkSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { after, describe, test } from "node:test";
import pg from "pg";
import mysql from "mysql2/promise";
import { Backend, BackendError, InvalidInputError, NoSpaceError } from "../provider/library";
import { openPersistence } from "../provider/persistence";
import { SCHEMA_VERSION, stepAfter } from "../provider/persistence/sql/migrations";
import type { SqlServerPersistence } from "../provider/persistence/sql/store";
import { needsRoot, removeDir, tempDir } from "./helpers/env";
import { kindling } from "./helpers/cli";
import { fill, makeFilesystem } from "./helpers/filesystems";
import { freePort } from "./helpers/daemon";
import { recordsVersusStorage } from "./helpers/consistency";
import { DatabaseServer, databasesMissing, type DatabaseKind } from "./helpers/databases";

const execFileAsync = promisify(execFile);
const skip = databasesMissing();

/** Runs SQL as the store's own user, outside kindling (to make old schemas, to look). */
async function raw(server: DatabaseServer, statements: string[]): Promise<void> {
  if (server.kind === "postgres") {
    const client = new pg.Client({ host: "127.0.0.1", port: server.port, user: "kindling", password: server.password, database: "kindling" });
    await client.connect();
    try {
      for (const s of statements) await client.query(s);
    } finally {
      await client.end();
    }
  } else {
    const connection = await mysql.createConnection({ host: "127.0.0.1", port: server.port, user: "kindling", password: server.password, database: "kindling" });
    try {
      for (const s of statements) await connection.query(s);
    } finally {
      await connection.end();
    }
  }
}


const DROP_ALL = ["volumes", "snapshots", "connections", "key_values", "kindling_schema"].map((t) => `DROP TABLE IF EXISTS ${t}`);

function legacyVolume(id: string) {
  return { class: "Volume", id, name: "from-before", description: "", backend: "b", pool: "p", sizeGiB: 1, status: "available", extraSpecs: {}, qosSpecs: {}, metadata: {}, createdAt: "2026-01-01T00:00:00.000Z", updatedAt: "2026-01-01T00:00:00.000Z" };
}

for (const kind of ["postgres", "mysql"] as DatabaseKind[]) {
  describe(`${kind} records: faults`, { skip }, () => {
    const servers: DatabaseServer[] = [];
    const dirs: string[] = [];
    const start = async (opts: Parameters<typeof DatabaseServer.start>[1] = {}) => {
      const server = await DatabaseServer.start(kind, opts);
      servers.push(server);
      return server;
    };
    after(async () => {
      for (const s of servers) await s.stop().catch(() => undefined);
      for (const d of dirs) removeDir(d);
    });

    test("a wrong password, a refused port and a server that never answers are errors naming the server, with no password in them", async () => {
      const server = await start();
      const wrong = "not-the-password-at-all";
      await assert.rejects(openPersistence({ ...server.persistence(), password: wrong }), (e: unknown) => {
        assert.ok(e instanceof BackendError, String(e));
        assert.match(e.message, /refused user kindling: authentication failed/);
        assert.ok(e.message.includes(server.url), "names the server");
        assert.ok(!e.message.includes(wrong) && !e.message.includes(server.password), "no password in the message");
        return true;
      });
      const closed = await freePort();
      await assert.rejects(openPersistence({ ...server.persistence(), url: server.url.replace(String(server.port), String(closed)) }), (e: unknown) =>
        e instanceof BackendError && /cannot reach the records store/.test(e.message) && e.message.includes(`127.0.0.1:${closed}`));
      // Accepts the connection, never says a word: the timeout, not a hang.
      const silent: Server = createServer(() => undefined);
      await new Promise<void>((done) => silent.listen(0, "127.0.0.1", done));
      const port = (silent.address() as { port: number }).port;
      try {
        await assert.rejects(openPersistence({ ...server.persistence(), url: server.url.replace(String(server.port), String(port)), timeoutSeconds: 1 }), (e: unknown) =>
          e instanceof BackendError && /cannot reach the records store/.test(e.message) && e.message.includes(`127.0.0.1:${port}`));
      } finally {
        silent.close();
      }
    });

    test("the password is in no log line, output, error or record of the command, debug logging on", async () => {
      const server = await start();
      const dir = tempDir();
      dirs.push(dir);
      const configFile = join(dir, "k.json");
      writeFileSync(configFile, JSON.stringify({ persistence: server.persistence(), backends: { local: { driver: "file", path: join(dir, "v") } } }), { mode: 0o600 });
      const env = { KINDLING_LOG_LEVEL: "debug" };
      const runs = [
        ["volume", "create", "logged", "--size", "1"], ["--json", "volume", "list"], ["snapshot", "create", "logged", "s"],
        ["volume", "create", "bad", "--size", "0"], ["snapshot", "delete", "s"], ["volume", "delete", "logged"],
      ];
      for (const args of runs) {
        const r = kindling(["--config", configFile, ...args], { env });
        assert.ok(!r.stdout.includes(server.password) && !r.stderr.includes(server.password), `kindling ${args.join(" ")} showed the password`);
      }
      const wrongConfig = join(dir, "wrong.json");
      writeFileSync(wrongConfig, JSON.stringify({ persistence: { ...server.persistence(), password: "WrongPassword123" }, backends: { local: { driver: "file", path: join(dir, "v") } } }), { mode: 0o600 });
      const wrong = kindling(["--config", wrongConfig, "volume", "list"], { env });
      assert.equal(wrong.code, 1);
      assert.match(wrong.stderr, /authentication failed/);
      assert.ok(!wrong.stderr.includes("WrongPassword123"), "not the wrong one either");
      const p = await openPersistence(server.persistence());
      try {
        const everything = JSON.stringify([await p.getVolumes(), await p.getSnapshots(), await p.getConnections(), await p.getKeyValues()]);
        assert.ok(!everything.includes(server.password), "no record holds it");
      } finally {
        await p.close();
      }
    });

    test("configuration that would leak the password or is unclear is refused naming the field", async () => {
      const url = `${kind}://kindling:Pa55w0rdInUrl@127.0.0.1:1/kindling`;
      await assert.rejects(openPersistence({ storage: kind, url }), (e: unknown) => e instanceof InvalidInputError && e.field === "persistence.url" && !e.message.includes("Pa55w0rdInUrl"));
      await assert.rejects(openPersistence({ storage: kind, url: `${kind}://127.0.0.1/kindling` }), (e: unknown) => e instanceof InvalidInputError && e.field === "persistence.url" && /user/.test(e.message));
      await assert.rejects(openPersistence({ storage: kind, url: `${kind}://kindling@127.0.0.1` }), (e: unknown) => e instanceof InvalidInputError && e.field === "persistence.url" && /database/.test(e.message));
      await assert.rejects(openPersistence({ storage: kind, url: `${kind}://kindling@127.0.0.1/k`, password: "a", passwordFile: "/x" }), (e: unknown) => e instanceof InvalidInputError && e.field === "persistence.passwordFile");
    });

    test("a server that crashes mid-operation: the operation fails naming the store, and the next one, once it is back, repairs", async () => {
      // Durable commits, as a production server keeps them: what was recorded survives the crash.
      const server = await start({ durable: true });
      const dir = tempDir();
      dirs.push(dir);
      const pool = join(dir, "volumes");
      const backend = await Backend.open({ name: "crash", driver: "file", path: pool, persistence: server.persistence() });
      try {
        const volume = await backend.createVolume({ sizeGiB: 1, name: "thick", extraSpecs: { preallocation: "full" } });
        const extending = volume.extend(3).then(() => undefined, (err: unknown) => err);
        const watcher = await openPersistence(server.persistence());
        for (let i = 0; i < 1000 && (await watcher.getVolumes({ id: volume.id }))[0].status !== "extending"; i++) await new Promise((r) => setTimeout(r, 5));
        await watcher.close();
        await server.kill();
        const failure = await extending;
        assert.ok(failure instanceof BackendError, `the extend failed with a BackendError, not ${String(failure)}`);
        assert.ok(failure.message.includes(server.url), failure.message);
        assert.match(failure.message, /lost the connection|cannot reach/);
        await server.restart();
        await backend.settle();
        assert.deepEqual(await recordsVersusStorage(backend, pool), [], "records match the storage once repaired");
        assert.equal((await backend.getVolume("thick")).sizeGiB, 3, "the interrupted extend was finished");
        await (await backend.getVolume("thick")).delete();
      } finally {
        await backend.close();
      }
    });

    test("a full disk on the database side: changes fail with NoSpaceError naming the store, and all is whole once there is room", async (t) => {
      if (needsRoot(t)) return;
      const fs = makeFilesystem("ext4", 160);
      try {
        const server = await start({ dataDir: fs.mountpoint, durable: true });
        const dir = tempDir();
        dirs.push(dir);
        const pool = join(dir, "volumes");
        const configFile = join(dir, "k.json");
        writeFileSync(configFile, JSON.stringify({ persistence: server.persistence(), backends: { local: { driver: "file", path: pool } } }), { mode: 0o600 });
        const backend = await Backend.open({ name: "local", driver: "file", path: pool, persistence: server.persistence() });
        try {
          for (const name of ["a", "b"]) await backend.createVolume({ sizeGiB: 1, name });
          const filler = fill(fs.mountpoint);
          let failure: unknown;
          for (let i = 0; i < 400 && failure === undefined; i++) {
            // Long descriptions, so the records themselves need room the server no longer has.
            await backend.createVolume({ sizeGiB: 1, name: `full-${i}`, description: "d".repeat(4000) }).catch((err: unknown) => (failure = err));
          }
          assert.ok(failure instanceof NoSpaceError, `a NoSpaceError, not ${String(failure)}`);
          assert.ok(failure.message.includes(server.url), failure.message);
          const cli = kindling(["--config", configFile, "volume", "create", "q", "--size", "1", "--description", "d".repeat(4000)]);
          assert.equal(cli.code, 5, `the command exits 5 for no space: ${cli.stderr}`);
          assert.ok(!cli.stderr.includes(server.password), "no password in the error");
          unlinkSync(filler);
          await backend.settle();
          assert.deepEqual(await recordsVersusStorage(backend, pool), [], "records match the storage");
          assert.ok(await backend.createVolume({ sizeGiB: 1, name: "after" }), "with room again, changes work");
          for (const v of await backend.volumes()) await v.delete();
        } finally {
          await backend.close();
        }
        await server.stop();
      } finally {
        fs.remove();
      }
    });

    test("a restart between operations: the next operation connects again", async () => {
      const server = await start();
      const p = await openPersistence(server.persistence());
      try {
        assert.equal(await p.compareAndSetKeyValue("before", undefined, "1"), true);
        await server.restart();
        // The connections the pool held died with the server; a new one is made for this.
        let after: boolean | undefined;
        for (let attempt = 0; after === undefined && attempt < 2; attempt++) {
          after = await p.compareAndSetKeyValue("after", undefined, "1").catch((err: unknown) => {
            // The first may meet a connection that died with the server: a clear error, then a new one.
            assert.ok(err instanceof BackendError && /lost the connection/.test(err.message), String(err));
            return undefined;
          });
        }
        assert.equal(after, true);
        assert.deepEqual((await p.getKeyValues()).map((kv) => kv.key).sort(), ["after", "before"]);
      } finally {
        await p.close();
      }
    });

    test("TLS: the server's CA is trusted as configured, and a certificate nobody vouches for is refused", async () => {
      const server = await start({ tls: true });
      const p = await openPersistence(server.persistence());
      try {
        assert.equal(await p.compareAndSetKeyValue("over-tls", undefined, "1"), true);
      } finally {
        await p.close();
      }
      await assert.rejects(openPersistence({ ...server.persistence(), tls: true }), (e: unknown) =>
        e instanceof BackendError && e.message.includes(server.url) && /certificate/i.test(e.message));
    });

    test("a database made by the schema before versions opens and is upgraded, its records kept", async () => {
      const server = await start();
      const id = "01a23120-0000-7000-8000-000000000001";
      await raw(server, [
        ...stepAfter(0, kind).statements,
        "CREATE TABLE kindling_schema (version INTEGER NOT NULL)",
        "INSERT INTO kindling_schema (version) VALUES (1)",
        `INSERT INTO volumes (id, backend, name, doc) VALUES ('${id}', 'b', 'from-before', '${JSON.stringify(legacyVolume(id))}')`,
      ]);
      const p = (await openPersistence(server.persistence())) as SqlServerPersistence;
      try {
        assert.equal(await p.schemaVersion(), SCHEMA_VERSION);
        const [record] = await p.getVolumes({ id });
        assert.equal(record.name, "from-before");
        assert.equal(await p.compareAndSetRecord("volume", { ...record, status: "deleting", version: 2 }, 1), true, "it counts as version 1");
      } finally {
        await p.close();
      }
    });

    test("two processes upgrading one database at once: both open it, and it is whole", async () => {
      const server = await start();
      await raw(server, DROP_ALL);
      const module = resolve(__dirname, "..", "provider", "persistence");
      const script = `
        const { openPersistence } = require(${JSON.stringify(module)});
        (async () => {
          // The store's settings (its password among them) come in the environment, never on a command line.
          const p = await openPersistence(JSON.parse(process.env.KINDLING_TEST_STORE));
          const ok = await p.compareAndSetKeyValue(process.argv[1], undefined, "1");
          await p.close();
          if (!ok) process.exit(3);
        })().catch((e) => { console.error(e.message); process.exit(1); });`;
      await Promise.all(["a", "b", "c"].map((tag) => execFileAsync(process.execPath, ["-e", script, tag], { env: { ...process.env, KINDLING_TEST_STORE: JSON.stringify(server.persistence()) } })));
      const p = (await openPersistence(server.persistence())) as SqlServerPersistence;
      try {
        assert.equal(await p.schemaVersion(), SCHEMA_VERSION);
        assert.deepEqual((await p.getKeyValues()).map((kv) => kv.key).sort(), ["a", "b", "c"]);
      } finally {
        await p.close();
      }
    });
  });
}

