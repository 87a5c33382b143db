// Bad input is refused with an error naming the field, and nothing is created: no file
// anywhere under the test's directory, no record.
import assert from "node:assert/strict";
import { existsSync, statSync } from "node:fs";
import { homedir } from "node:os";
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

  // Names that look harmless, or look like nothing at all, each refused naming its rule.
  const lookalikeNames: Array<[string, string, RegExp]> = [
    ["ESC (C0)", "a\u001b[31mred", /^must be printable \(no control characters or line breaks; found U\+001B\)$/],
    ["NEL (C1)", "a\u0085b", /found U\+0085/],
    ["CSI (C1)", "a\u009b2J", /found U\+009B/],
    ["DEL", "a\u007fb", /found U\+007F/],
    ["line separator", "a\u2028b", /found U\+2028/],
    ["right-to-left override", "txt.\u202egpj", /^must not contain bidirectional text controls.*found U\+202E/],
    ["left-to-right embedding", "a\u202ab", /bidirectional.*U\+202A/],
    ["pop directional formatting", "a\u202cb", /bidirectional.*U\+202C/],
    ["left-to-right override", "a\u202db", /bidirectional.*U\+202D/],
    ["first-strong isolate", "a\u2068b", /bidirectional.*U\+2068/],
    ["right-to-left isolate", "a\u2067b", /bidirectional.*U\+2067/],
    ["pop directional isolate", "a\u2069b", /bidirectional.*U\+2069/],
    ["left-to-right mark", "a\u200eb", /bidirectional.*U\+200E/],
    ["right-to-left mark", "a\u200fb", /bidirectional.*U\+200F/],
    ["Arabic letter mark", "a\u061cb", /bidirectional.*U\+061C/],
    ["zero-width space", "a\u200bb", /^must not contain zero-width or invisible characters \(found U\+200B\)$/],
    ["zero-width non-joiner", "a\u200cb", /invisible.*U\+200C/],
    ["zero-width joiner", "a\u200db", /invisible.*U\+200D/],
    ["word joiner", "a\u2060b", /invisible.*U\+2060/],
    ["byte order mark", "\ufeffa", /invisible.*U\+FEFF/],
    ["soft hyphen", "a\u00adb", /invisible.*U\+00AD/],
    ["Mongolian vowel separator", "a\u180eb", /invisible.*U\+180E/],
    ["Hangul filler", "\u3164", /invisible.*U\+3164/],
    ["variation selector", "a\ufe0f", /invisible.*U\+FE0F/],
    ["tag character", "a\u{e0041}", /invisible.*U\+E0041/],
    ["a lone space", " ", /^must not start or end with whitespace$/],
    ["a trailing space", "a ", /^must not start or end with whitespace$/],
    ["a leading space", " a", /whitespace/],
    ["a trailing no-break space", "a\u00a0", /whitespace/],
    ["a leading em space", "\u2003a", /whitespace/],
    ["a trailing ideographic space", "a\u3000", /whitespace/],
    ["U+FFFD (invalid UTF-8 in argv)", "a\ufffdb", /^must be valid UTF-8 \(found U\+FFFD/],
    ["a lone high surrogate", "a\ud800", /^must be valid UTF-8 \(found a lone surrogate U\+D800\)$/],
    ["a lone low surrogate", "\udc00b", /valid UTF-8.*U\+DC00/],
    ["a UUID", "01a230b5-ee80-77bb-b105-761be997c22b", /^must not be a UUID/],
    ["an upper-case UUID", "01A230B5-EE80-77BB-B105-761BE997C22B", /^must not be a UUID/],
    ["a mixed-case UUID", "01a230B5-ee80-77Bb-b105-761be997C22b", /^must not be a UUID/],
  ];
  for (const [label, name, rule] of lookalikeNames) {
    test(`a name with ${label} is refused naming the rule`, async () => {
      const ruleOf = async (work: () => Promise<unknown>) => {
        let rule = "";
        await refused("name", () => work().catch((err: unknown) => {
          rule = (err as InvalidInputError).rule;
          throw err;
        }));
        return rule;
      };
      assert.match(await ruleOf(() => backend.createVolume({ sizeGiB: 1, name })), rule);
      assert.match(await ruleOf(() => source.clone({ name })), rule);
      assert.match(await ruleOf(() => source.createSnapshot({ name })), rule);
      assert.match(await ruleOf(() => source.update({ name })), rule);
      assert.equal((await backend.getVolume("source")).name, "source", "the refused rename changed nothing");
    });
  }

  test("names that only resemble the refused ones are fine", async () => {
    for (const name of ["db data", "a\u00a0b", "prod-01a230b5-ee80-77bb-b105-761be997c22b", "01a230b5ee8077bbb105761be997c22b", "日本語の名前", "🚀 launch", "e\u0301"]) {
      const volume = await backend.createVolume({ sizeGiB: 1, name });
      assert.equal(volume.name, name);
      await volume.delete();
    }
  });

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

  // JSON.parse keeps "__proto__" as an own key; zod's record drops it without a word, which
  // turned `metadata: {"__proto__": "x"}` into `{}`. Refused, naming the key.
  for (const key of ["__proto__", "constructor", "prototype"]) {
    test(`metadata and spec key ${key} is refused naming the key, not dropped`, async () => {
      const map = JSON.parse(`{${JSON.stringify(key)}: "x"}`) as Record<string, string>;
      assert.ok(Object.hasOwn(map, key), "the input really has the key");
      await refused(`metadata.${key}`, () => backend.createVolume({ sizeGiB: 1, metadata: map }));
      await refused(`metadata.${key}`, () => source.clone({ metadata: map }));
      await refused(`metadata.${key}`, () => source.createSnapshot({ metadata: map }));
      await refused(`metadata.${key}`, () => source.update({ metadata: map }));
      await refused(`extraSpecs.${key}`, () => backend.createVolume({ sizeGiB: 1, extraSpecs: map }));
      await refused(`qosSpecs.${key}`, () => backend.createVolume({ sizeGiB: 1, qosSpecs: map }));
      await refused(`qosSpecs.${key}`, () => source.update({ qosSpecs: map }));
      assert.deepEqual((await backend.getVolume("source")).metadata, {}, "the refused update changed nothing");
    });
  }

  test("a QoS value with leading zeros says which form is wanted", async () => {
    await assert.rejects(backend.createVolume({ sizeGiB: 1, qosSpecs: { total_iops_sec: "00010" } }), (err: unknown) => {
      assert.ok(err instanceof InvalidInputError);
      assert.equal(err.field, "qosSpecs.total_iops_sec");
      assert.equal(err.rule, "must be written without leading zeros: 10, not 00010");
      return true;
    });
    await assert.rejects(backend.createVolume({ sizeGiB: 1, qosSpecs: { total_iops_sec: "1.5" } }), /qosSpecs\.total_iops_sec: must be a positive whole number in plain digits.*\(e\.g\. 10\)/);
    await assert.rejects(backend.createVolume({ sizeGiB: 1, qosSpecs: { total_iops_sec: "1".repeat(19) } }), /qosSpecs\.total_iops_sec: must be at most 18 digits/);
    assert.deepEqual((await backend.volumes()).map((v) => v.name), ["source"]);
  });

  test("connectors are bounded (64 keys, 16 KiB as JSON) and refuse reserved keys at any depth", async () => {
    const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"]));
    const cases: Array<[string, unknown, RegExp]> = [
      ["connector", many, /must have at most 64 keys/],
      ["connector", { host: "x".repeat(16 * 1024) }, /must be at most 16 KiB as JSON/],
      ["connector.__proto__", JSON.parse('{"__proto__": {"host": "elsewhere"}}'), /"__proto__" cannot be a key/],
      ["connector.constructor", { constructor: "x" }, /"constructor" cannot be a key/],
      ["connector.options.0.prototype", { options: [{ prototype: 1 }] }, /"prototype" cannot be a key/],
    ];
    for (const [field, connector, rule] of cases) {
      assert.throws(() => backend.validateConnector("local", connector), (e: unknown) => e instanceof InvalidInputError && e.field === field && rule.test(e.rule), field);
      await refused(field, () => source.connect("local", connector as Record<string, unknown>));
    }
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    assert.throws(() => backend.validateConnector("local", cyclic), /connector: must be plain JSON/);
    backend.validateConnector("local", Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, "v"])));
    assert.deepEqual(await source.connections(), [], "no connection was recorded");
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
    ["backend.name", { name: "local\u200b", driver: "file", path: dir }],
    ["backend.name", { name: "local ", driver: "file", path: dir }],
    ["backend.pools.fast\u202e", { name: "b", driver: "file", pools: { "fast\u202e": dir } }],
  ];
  for (const [field, config] of cases) {
    test(`${JSON.stringify(config).slice(0, 80)} names ${field}`, () => {
      const before = listTree(dir);
      assert.throws(() => new Backend(config as never), (e: unknown) => e instanceof InvalidInputError && e.field === field);
      assert.deepEqual(listTree(dir), before);
    });
  }

  // An empty path used to become the config file's own directory (the relative path "" resolved
  // against it), and volumes were created there.
  const pathCases: Array<[string, Record<string, unknown>, RegExp]> = [
    ["backend.path", { name: "b", driver: "file", path: "" }, /must be a directory path/],
    ["backend.pools.a", { name: "b", driver: "file", pools: { a: "" } }, /must be a directory path/],
    ["backend.cephConf", { name: "b", driver: "rbd", pool: "p", cephConf: "" }, /must be a file path/],
    ["backend.path", { name: "b", driver: "file", path: "~root/volumes" }, /only ~ and ~\/\.\.\. are expanded/],
    ["backend.pools.a", { name: "b", driver: "file", pools: { a: "~nobody" } }, /only ~ and ~\/\.\.\. are expanded/],
  ];
  for (const [field, config, rule] of pathCases) {
    test(`path ${JSON.stringify(config.path ?? config.pools ?? config.cephConf)} in a config file is refused naming ${field}`, () => {
      const before = listTree(dir);
      assert.throws(() => new Backend(config as never, { baseDir: dir }), (e: unknown) => e instanceof InvalidInputError && e.field === field && rule.test(e.rule));
      assert.deepEqual(listTree(dir), before, "nothing made in the config file's directory");
    });
  }

  test("~ and ~/... in a backend's paths are the home directory, with or without a config file", () => {
    const home = homedir();
    assert.equal(new Backend({ name: "b", driver: "file", path: "~/volumes" }, { baseDir: dir }).settings.path, join(home, "volumes"));
    assert.equal(new Backend({ name: "b", driver: "file", path: "~" }, { baseDir: dir }).settings.path, home);
    assert.deepEqual(new Backend({ name: "b", driver: "file", pools: { a: "~/a", b: "b" } }, { baseDir: dir }).settings.pools, { a: join(home, "a"), b: join(dir, "b") });
    assert.equal(new Backend({ name: "b", driver: "file", path: "~/volumes" }).settings.path, join(home, "volumes"), "a program's backend too");
    assert.equal(new Backend({ name: "b", driver: "file", path: "a/~/b" }, { baseDir: dir }).settings.path, join(dir, "a/~/b"), "only a leading ~ is special");
    assert.ok(!existsSync(join(dir, "~")), "no directory named ~");
  });
});
