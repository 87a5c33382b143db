// Bad input is refused with an error naming the field, and nothing is created: no file
// anywhere under the test's directory, no record.
import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { Backend, InvalidInputError, type Volume } from "../provider/library";
import { fileBackend } from "./helpers/backends";
import { listTree, removeDir, tempDir } from "./helpers/env";

describe("bad input creates nothing", () => {
  let backend: Backend;
  let dir: string;
  let source: Volume;
  let treeBefore: string[];

  before(async () => {
    ({ backend, dir } = await fileBackend("sqlite"));
    source = await backend.createVolume({ sizeGiB: 1, name: "source" });
  });
  after(async () => {
    await source.delete();
    await backend.close();
    removeDir(dir);
  });

  async function refused(field: string | RegExp, work: () => Promise<unknown>): Promise<void> {
    treeBefore = listTree(dir);
    const volumesBefore = (await backend.volumes()).map((v) => v.id);
    await assert.rejects(work(), (err: unknown) => {
      assert.ok(err instanceof InvalidInputError, `an InvalidInputError, got ${String(err)}`);
      if (typeof field === "string") assert.equal(err.field, field, err.message);
      else assert.match(err.field ?? "", field, err.message);
      assert.ok(err.message.startsWith(err.field ?? "?"), "the message names the field");
      return true;
    });
    assert.deepEqual(listTree(dir), treeBefore, "no file was created or removed");
    assert.deepEqual((await backend.volumes()).map((v) => v.id), volumesBefore, "no record was created");
  }

  /** What is at `path` (existence, size, mtime), comparable before and after. */
  function state(path: string): string {
    try {
      const st = statSync(path);
      return `${st.size}:${st.mtimeMs}:${st.mode}`;
    } catch {
      return "absent";
    }
  }

  const hostileNames = ["../x", "../../x", "a/b", "/etc/passwd", ".", "..", "", "x".repeat(256), "é".repeat(128), "a\0b", "line\nbreak", "tab\there", "\u007f"];
  for (const name of hostileNames) {
    test(`name ${JSON.stringify(name.length > 20 ? `${name.slice(0, 8)}...(${Buffer.byteLength(name)} bytes)` : name)} is refused`, async () => {
      // Outside the test's tree too: wherever the name would lead if it became a path.
      const pool = join(dir, "volumes");
      const places = [pool, dir, dirname(dir)].flatMap((base) => ["", "volume-", "snapshot-"].map((prefix) => resolve(base, prefix + name)));
      const outside = places.map(state);
      const entries = listTree(dir).length;
      await refused("name", () => backend.createVolume({ sizeGiB: 1, name }));
      await refused("name", () => source.clone({ name }));
      await refused("name", () => source.createSnapshot({ name }));
      await refused("name", () => source.update({ name }));
      assert.deepEqual(places.map(state), outside, "nothing appeared or changed where the name points");
      assert.equal(listTree(dir).length, entries);
      assert.equal((await backend.getVolume("source")).name, "source", "the refused rename changed nothing");
    });
  }

  test("a 255-byte name is fine and still lands inside the pool as an id-named file", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, name: "é".repeat(127) + "x" });
    assert.match(volume.location as string, /\/volume-[0-9a-f-]{36}$/);
    await volume.delete();
  });

  for (const size of [0, -1, 1.5, "1", 10 ** 7, Number.NaN, Infinity, undefined]) {
    test(`size ${String(size)} is refused`, async () => {
      await refused("sizeGiB", () => backend.createVolume({ sizeGiB: size as number }));
    });
  }

  test("a size the pool's filesystem could never hold is refused", async () => {
    const total = (await backend.stats(true)).pools[0].total_capacity_gb as number;
    await refused("sizeGiB", () => backend.createVolume({ sizeGiB: Math.ceil(total) + 1 }));
    await refused("sizeGiB", () => source.extend(Math.ceil(total) + 1));
    await refused("sizeGiB", () => source.clone({ sizeGiB: Math.ceil(total) + 1 }));
  });

  test("specs: unknown or bad values name the key", async () => {
    await refused("extraSpecs.nosuch", () => backend.createVolume({ sizeGiB: 1, extraSpecs: { nosuch: "1" } }));
    await refused("extraSpecs.preallocation", () => backend.createVolume({ sizeGiB: 1, extraSpecs: { preallocation: "bogus" } }));
    await refused("qosSpecs.iops", () => backend.createVolume({ sizeGiB: 1, qosSpecs: { iops: "10" } }));
    await refused("qosSpecs.read_iops_sec", () => backend.createVolume({ sizeGiB: 1, qosSpecs: { read_iops_sec: "-1" } }));
    await refused("qosSpecs.read_bytes_sec", () => backend.createVolume({ sizeGiB: 1, qosSpecs: { read_bytes_sec: "1.5" } }));
    await refused("qosSpecs.total_iops_sec", () => backend.createVolume({ sizeGiB: 1, qosSpecs: { total_iops_sec: "10", read_iops_sec: "5" } }));
    await refused("qosSpecs.write_iops_sec", () => source.update({ qosSpecs: { write_iops_sec: "0" } }));
  });

  test("unknown options, pools and metadata shapes name the field", async () => {
    await refused("colour", () => backend.createVolume({ sizeGiB: 1, colour: "red" } as never));
    await refused("pool", () => backend.createVolume({ sizeGiB: 1, pool: "nosuch" }));
    await refused("id", () => backend.createVolume({ sizeGiB: 1, id: "../../etc" }));
    await refused(/^metadata/, () => backend.createVolume({ sizeGiB: 1, metadata: { k: 5 } as never }));
    await refused("description", () => backend.createVolume({ sizeGiB: 1, description: "x".repeat(5000) }));
  });

  test("connectors and protocols are checked", async () => {
    assert.throws(() => backend.validateConnector("iscsi", {}), (e: unknown) => e instanceof InvalidInputError && e.field === "protocol");
    assert.throws(() => backend.validateConnector("local", { host: "elsewhere.invalid" }), (e: unknown) => e instanceof InvalidInputError && e.field === "connector.host");
    assert.throws(() => backend.validateConnector("local", "nope"), (e: unknown) => e instanceof InvalidInputError && e.field === "connector");
    backend.validateConnector("local", {});
    await refused("connector.host", () => source.connect("local", { host: "elsewhere.invalid" }));
    assert.deepEqual(await source.connections(), []);
  });
});

describe("bad backend configuration", () => {
  const dir = tempDir();
  after(() => removeDir(dir));

  const cases: Array<[string, Record<string, unknown>]> = [
    ["backend.driver", { name: "b", driver: "nosuch", path: dir }],
    ["backend.colour", { name: "b", driver: "file", path: dir, colour: "red" }],
    ["backend.path", { name: "b", driver: "file" }],
    ["backend.path", { name: "b", driver: "file", path: dir, pools: { a: dir } }],
    ["backend.pools", { name: "b", driver: "file", pools: {} }],
    ["backend.copyMode", { name: "b", driver: "file", path: dir, copyMode: "sometimes" }],
    ["backend.name", { name: "../b", driver: "file", path: dir }],
    ["backend.persistence.storage", { name: "b", driver: "file", path: dir, persistence: { storage: "nosql" } }],
  ];
  for (const [field, config] of cases) {
    test(`${JSON.stringify(config).slice(0, 80)} names ${field}`, () => {
      const before = listTree(dir);
      assert.throws(() => new Backend(config as never), (e: unknown) => e instanceof InvalidInputError && e.field === field);
      assert.deepEqual(listTree(dir), before);
    });
  }
});
