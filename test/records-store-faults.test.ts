// The records store under faults: a full pool (records beside the data, the default), a
// corrupt, locked or read-only database, a directory where a file was expected. Each error
// names the store; nothing is half recorded; a full pool still lets a user delete to make room
// (defect D9 and the store items of the defects notes).
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { MiB } from "../provider/util/sizes";
import { needsRoot, removeDir, tempDir, writeDevice } from "./helpers/env";
import { kindling } from "./helpers/cli";
import { fill, makeFilesystem, type LoopFilesystem } from "./helpers/filesystems";


describe("a full pool with the records beside the data (defect D9)", () => {
  let fs: LoopFilesystem | undefined;
  after(() => fs?.remove());

  test("create fails with NoSpaceError and leaves nothing; delete still works; list works", async (t) => {
    if (needsRoot(t)) return;
    fs = makeFilesystem("ext4", 1400);
    const pool = join(fs.mountpoint, "v");
    const configFile = join(fs.mountpoint, "k.json");
    writeFileSync(configFile, JSON.stringify({ backends: { local: { driver: "file", path: pool } } }));
    const k = (args: string[]) => kindling(["--config", configFile, ...args]);
    for (const name of ["z1", "z2", "z3"]) assert.equal(k(["volume", "create", name, "--size", "1"]).code, 0);
    const z1 = k(["--json", "volume", "show", "z1"]).json<{ location: string }>();
    writeDevice(z1.location, Buffer.alloc(64 * MiB, 7));
    assert.ok(existsSync(join(pool, ".kindling", "kindling.db.reserve")), "the store keeps a reserve");
    const filler = fill(fs.mountpoint);
    const before = readdirSync(pool).sort();

    const create = k(["volume", "create", "q1", "--size", "1"]);
    assert.equal(create.code, 5, `no space is exit 5: ${create.stderr}`);
    assert.match(create.stderr, /no space/i);
    assert.doesNotMatch(create.stderr, /no transaction is active/, "the real error, not the failed rollback's");
    assert.deepEqual(readdirSync(pool).sort(), before, "no file made");
    const listed = k(["--json", "volume", "list"]);
    assert.equal(listed.code, 0, `listing works on a full pool: ${listed.stderr}`);
    assert.deepEqual(listed.json<Array<{ name: string; status: string }>>().map((v) => [v.name, v.status]), [["z1", "available"], ["z2", "available"], ["z3", "available"]], "no record half written");

    const deleted = k(["volume", "delete", "z1"]);
    assert.equal(deleted.code, 0, `delete works on a full pool: ${deleted.stderr}`);
    const second = k(["volume", "delete", "z2"]);
    assert.equal(second.code, 0, `and again, on the space the first delete freed: ${second.stderr}`);
    assert.deepEqual(k(["--json", "volume", "list"]).json<Array<{ name: string; status: string }>>().map((v) => [v.name, v.status]), [["z3", "available"]]);
    assert.equal(existsSync(z1.location), false);

    unlinkSync(filler);
    assert.equal(k(["volume", "create", "q1", "--size", "1"]).code, 0, "with space again, create works");
    assert.ok(existsSync(join(pool, ".kindling", "kindling.db.reserve")), "and the reserve is back");
  });
});

describe("errors of the records store name it", () => {
  const dir = tempDir();
  after(() => removeDir(dir));

  function setup(name: string): { k: (args: string[]) => ReturnType<typeof kindling>; db: string } {
    const pool = join(dir, name);
    const configFile = join(dir, `${name}.json`);
    writeFileSync(configFile, JSON.stringify({ backends: { local: { driver: "file", path: pool } } }));
    const k = (args: string[]) => kindling(["--config", configFile, ...args]);
    assert.equal(k(["volume", "create", "a", "--size", "1"]).code, 0);
    return { k, db: join(pool, ".kindling", "kindling.db") };
  }

  test("a corrupt database", () => {
    const { k, db } = setup("corrupt");
    for (const f of [db, `${db}-wal`, `${db}-shm`]) if (existsSync(f)) unlinkSync(f);
    writeFileSync(db, Buffer.alloc(8192, 0x41));
    const result = k(["volume", "list"]);
    assert.equal(result.code, 1);
    assert.ok(result.stderr.includes(db), result.stderr);
    assert.match(result.stderr, /corrupt|not a kindling database/);
  });

  test("a database another process holds locked", async () => {
    const { k, db } = setup("locked");
    const holder = spawn(process.execPath, ["-e", `
      const { DatabaseSync } = require("node:sqlite");
      const db = new DatabaseSync(${JSON.stringify(db)});
      db.exec("BEGIN EXCLUSIVE");
      console.log("locked");
      setInterval(() => {}, 1000);`], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      await new Promise<void>((resolve) => holder.stdout.once("data", () => resolve()));
      const result = k(["volume", "create", "b", "--size", "1"]);
      assert.equal(result.code, 1);
      assert.ok(result.stderr.includes(db), result.stderr);
      assert.match(result.stderr, /locked by another process/);
    } finally {
      holder.kill("SIGKILL");
    }
    assert.equal(k(["volume", "create", "b", "--size", "1"]).code, 0, "works once the holder is gone");
  });

  test("a read-only database: listing works, changes are refused naming it", (t) => {
    if (needsRoot(t)) return;
    const { k, db } = setup("readonly");
    const ro = join(dir, "readonly", ".kindling");
    execFileSync("mount", ["--bind", ro, ro]);
    try {
      execFileSync("mount", ["-o", "remount,ro,bind", ro]);
      const list = k(["--json", "volume", "list"]);
      assert.equal(list.code, 0, list.stderr);
      assert.deepEqual(list.json<Array<{ name: string }>>().map((v) => v.name), ["a"]);
      const create = k(["volume", "create", "b", "--size", "1"]);
      assert.equal(create.code, 1);
      assert.ok(create.stderr.includes(db), create.stderr);
      assert.match(create.stderr, /read-only/);
    } finally {
      execFileSync("umount", [ro]);
    }
  });

  test("a directory where the database file should be, and a file where the json directory should be", () => {
    const where = join(dir, "shapes");
    mkdirSync(join(where, "db-dir"), { recursive: true });
    writeFileSync(join(where, "a-file"), "x");
    for (const [persistence, said] of [
      [{ storage: "sqlite", path: join(where, "db-dir") }, /is a directory/],
      [{ storage: "json", path: join(where, "a-file") }, /is a file/],
    ] as const) {
      const configFile = join(where, "k.json");
      writeFileSync(configFile, JSON.stringify({ persistence, backends: { local: { driver: "file", path: join(where, "pool") } } }));
      const result = kindling(["--config", configFile, "volume", "list"]);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, /persistence\.path/);
      assert.match(result.stderr, said);
      assert.ok(result.stderr.includes(persistence.path));
    }
  });
});
