// Many operations at once on one backend with SQLite persistence: in one process, and from
// two processes sharing the backend's directory.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { DatabaseSync } from "node:sqlite";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";
import { Backend } from "../provider/library";
import { SqlitePersistence } from "../provider/persistence/sqlite";
import { removeDir, tempDir } from "./helpers/env";

const execFileAsync = promisify(execFile);

describe("concurrency with SQLite persistence", () => {
  let dir: string;
  let pool: string;
  before(() => {
    dir = tempDir();
    pool = join(dir, "volumes");
  });
  after(() => removeDir(dir));

  async function assertConsistent(backend: Backend, volumes: number, snapshots: number): Promise<void> {
    const vols = await backend.volumes();
    const snaps = await backend.snapshots();
    assert.equal(vols.length, volumes);
    assert.equal(snaps.length, snapshots);
    assert.equal(new Set(vols.map((v) => v.name)).size, volumes, "names unique");
    assert.ok(vols.every((v) => v.status === "available") && snaps.every((s) => s.status === "available"));
    const files = readdirSync(pool).filter((f) => f !== ".kindling").sort();
    assert.deepEqual(files, [...vols.map((v) => `volume-${v.id}`), ...snaps.map((s) => `snapshot-${s.id}`)].sort());
    // Every record parses as stored: the raw rows, read through a connection of our own.
    const db = new DatabaseSync(join(pool, ".kindling", "kindling.db"), { readOnly: true });
    try {
      for (const [table, count] of [["volumes", volumes], ["snapshots", snapshots]] as const) {
        const rows = db.prepare(`SELECT id, name, doc FROM ${table}`).all() as Array<{ id: string; name: string; doc: string }>;
        assert.equal(rows.length, count, table);
        for (const row of rows) {
          const doc = JSON.parse(row.doc) as { id: string; name: string; status: string; backend: string };
          assert.equal(doc.id, row.id);
          assert.equal(doc.name, row.name);
          assert.equal(doc.backend, backend.name);
          assert.equal(doc.status, "available");
        }
      }
    } finally {
      db.close();
    }
    const other = new SqlitePersistence(join(pool, ".kindling", "kindling.db"));
    try {
      assert.equal((await other.getVolumes({ backend: backend.name })).length, volumes);
    } finally {
      await other.close();
    }
  }

  test("20 concurrent creates, then 20 snapshots, then 20 clones, in one process", async () => {
    const backend = await Backend.open({ name: "busy", driver: "file", path: pool });
    try {
      const volumes = await Promise.all(Array.from({ length: 20 }, (_, i) => backend.createVolume({ sizeGiB: 1, name: `v${i}` })));
      await Promise.all(volumes.map((v) => v.createSnapshot({ name: `s-${v.name}` })));
      // Snapshots and clones of the same volumes, interleaved with extends of them.
      await Promise.all(volumes.flatMap((v) => [v.clone({ name: `c-${v.name}` }), v.extend(2)]));
      await assertConsistent(backend, 40, 20);
      const names = (await backend.volumes()).map((v) => v.name).sort();
      const expected = Array.from({ length: 20 }, (_, i) => [`v${i}`, `c-v${i}`]).flat().sort();
      assert.deepEqual(names, expected, "every volume and clone is there");
      assert.deepEqual((await backend.snapshots()).map((s) => s.name).sort(), volumes.map((v) => `s-${v.name}`).sort());
      for (const s of await backend.snapshots()) assert.ok(volumes.some((v) => v.id === s.volumeId));
      for (const c of (await backend.volumes()).filter((v) => v.name.startsWith("c-"))) {
        assert.equal(c.sourceVolumeId, volumes.find((v) => `c-${v.name}` === c.name)?.id, "each clone names its source");
      }
      assert.ok((await backend.volumes()).filter((v) => v.name.startsWith("v")).every((v) => v.sizeGiB === 2));
      for (const s of await backend.snapshots()) await s.delete();
      await Promise.all((await backend.volumes()).map((v) => v.delete()));
      await assertConsistent(backend, 0, 0);
    } finally {
      await backend.close();
    }
  });

  test("two processes creating 10 volumes each at once on the same backend", async () => {
    // A fresh directory: the two processes also race to make the pool and its records database.
    pool = join(dir, "fresh");
    const library = resolve(__dirname, "..", "provider", "library");
    const script = `
      const { Backend } = require(${JSON.stringify(library)});
      (async () => {
        const b = await Backend.open({ name: "busy", driver: "file", path: ${JSON.stringify(pool)} });
        await Promise.all(Array.from({ length: 10 }, (_, i) => b.createVolume({ sizeGiB: 1, name: process.argv[1] + "-" + i })));
        await b.close();
      })().catch((e) => { console.error(e); process.exit(1); });`;
    await Promise.all(["a", "b"].map((tag) => execFileAsync(process.execPath, ["-e", script, tag])));
    const backend = await Backend.open({ name: "busy", driver: "file", path: pool });
    try {
      await assertConsistent(backend, 20, 0);
      const expected = ["a", "b"].flatMap((tag) => Array.from({ length: 10 }, (_, i) => `${tag}-${i}`)).sort();
      assert.deepEqual((await backend.volumes()).map((v) => v.name).sort(), expected);
      await Promise.all((await backend.volumes()).map((v) => v.delete()));
    } finally {
      await backend.close();
    }
  });
});
