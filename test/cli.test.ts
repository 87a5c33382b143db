// The kindling command, run as a process through bin/kindling.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { GiB } from "../provider/util/sizes";
import { kindling, ok } from "./helpers/cli";
import { deviceSize, listTree, needsRoot, removeDir, sh, tempDir } from "./helpers/env";

describe("kindling command", () => {
  let dir: string;
  let config: string;
  let env: Record<string, string>;
  const k = (...args: string[]) => kindling(["--config", config, ...args], { env });

  before(() => {
    dir = tempDir();
    env = { XDG_DATA_HOME: join(dir, "xdg") };
    config = join(dir, "kindling.json");
    writeFileSync(config, JSON.stringify({
      persistence: { storage: "sqlite", path: "state/kindling.db" },
      backends: { local: { driver: "file", path: "volumes" }, tiered: { driver: "file", pools: { fast: "fast", bulk: "bulk" } } },
    }));
  });
  after(() => removeDir(dir));

  test("volume and snapshot round trip with --json", () => {
    const created = ok(k("--backend", "local", "--json", "volume", "create", "db data", "--size", "1", "--meta", "team=db", "--spec", "preallocation=off", "--qos", "read_iops_sec=100")).json();
    assert.equal(created.name, "db data");
    assert.equal(created.sizeGiB, 1);
    assert.equal(created.status, "available");
    assert.equal(created.pool, "local");
    assert.equal(created.backend, "local");
    assert.deepEqual(created.metadata, { team: "db" });
    assert.deepEqual(created.qosSpecs, { read_iops_sec: "100" });
    assert.ok(existsSync(join(dir, "volumes", `volume-${created.id}`)));

    const list = ok(k("--backend", "local", "--json", "volume", "list")).json();
    assert.deepEqual(list.map((v: { id: string }) => v.id), [created.id]);
    const shown = ok(k("--backend", "local", "--json", "volume", "show", "db data", "--refresh")).json();
    assert.equal(shown.id, created.id);
    assert.equal(shown.actual.sizeBytes, GiB, "--refresh asks the storage");
    assert.equal(ok(k("--backend", "local", "--json", "volume", "show", "db data")).json().actual, undefined, "records only without --refresh");
    assert.equal(ok(k("--backend", "local", "--json", "volume", "show", created.id)).json().name, "db data", "by id too");

    assert.equal(ok(k("--backend", "local", "--json", "volume", "extend", "db data", "--size", "2")).json().sizeGiB, 2);
    const snap = ok(k("--backend", "local", "--json", "snapshot", "create", "db data", "before")).json();
    assert.equal(snap.volumeSizeGiB, 2);
    assert.equal(ok(k("--backend", "local", "--json", "snapshot", "list", "db data")).json().length, 1);
    assert.equal(ok(k("--backend", "local", "--json", "snapshot", "show", "before", "--refresh")).json().actual.exists, true);
    assert.equal(ok(k("--backend", "local", "--json", "snapshot", "show", "before")).json().actual, undefined, "records only without --refresh");
    const restored = ok(k("--backend", "local", "--json", "volume", "create", "restored", "--from-snapshot", "before", "--size", "3")).json();
    assert.equal(restored.snapshotId, snap.id);
    assert.equal(restored.sizeGiB, 3);
    const clone = ok(k("--backend", "local", "--json", "volume", "clone", "db data", "copy")).json();
    assert.equal(clone.sourceVolumeId, created.id);
    const fromVolume = ok(k("--backend", "local", "--json", "volume", "create", "copy2", "--from-volume", "db data")).json();
    assert.equal(fromVolume.sizeGiB, 2, "a copy defaults to its source's size");

    const human = ok(k("--backend", "local", "volume", "list")).stdout;
    assert.match(human, /^NAME\s+ID\s+SIZE GiB\s+STATUS/);
    assert.match(human, /db data/);

    const inUse = k("--backend", "local", "volume", "delete", "db data");
    assert.equal(inUse.code, 4);
    assert.match(inUse.stderr, /has 1 snapshot/);
    ok(k("--backend", "local", "snapshot", "delete", "before"));
    for (const name of ["restored", "copy", "copy2", "db data"]) ok(k("--backend", "local", "volume", "delete", name));
    assert.deepEqual(ok(k("--backend", "local", "--json", "volume", "list")).json(), []);
    assert.deepEqual(readdirSync(join(dir, "volumes")), []);
  });

  test("two backends: --backend is required, and --pool places the file", () => {
    const r = k("volume", "list");
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--backend/);
    assert.match(r.stderr, /local, tiered/);
    const v = ok(k("--backend", "tiered", "--json", "volume", "create", "fast-one", "--size", "1", "--pool", "bulk")).json();
    assert.equal(dirname(v.location), join(dir, "bulk"));
    const backends = ok(k("--json", "backends")).json();
    assert.deepEqual(backends.backends.map((b: { name: string }) => b.name), ["local", "tiered"]);
    assert.deepEqual(backends.backends[1].pools, ["fast", "bulk"]);
    const stats = ok(k("--backend", "tiered", "--json", "stats", "--refresh")).json();
    assert.equal(stats.pools.find((p: { pool_name: string }) => p.pool_name === "bulk").total_volumes, 1);
    ok(k("--backend", "tiered", "volume", "delete", "fast-one"));
  });

  describe("bad input: non-zero exit, the field named, nothing created", () => {
    const cases: Array<[string, string[], RegExp, number]> = [
      ["size 0", ["volume", "create", "x", "--size", "0"], /--size/, 2],
      ["size 1.5", ["volume", "create", "x", "--size", "1.5"], /--size/, 2],
      ["size abc", ["volume", "create", "x", "--size", "abc"], /--size/, 2],
      ["missing size", ["volume", "create", "x"], /--size/, 2],
      ["name ../x", ["volume", "create", "../x", "--size", "1"], /^kindling: name: must not contain '\/'/, 2],
      ["name of 256 bytes", ["volume", "create", "n".repeat(256), "--size", "1"], /^kindling: name: must be at most 255 bytes/, 2],
      ["unknown spec", ["volume", "create", "x", "--size", "1", "--spec", "nosuch=1"], /extraSpecs\.nosuch/, 2],
      ["bad preallocation", ["volume", "create", "x", "--size", "1", "--spec", "preallocation=bogus"], /extraSpecs\.preallocation/, 2],
      ["negative qos", ["volume", "create", "x", "--size", "1", "--qos", "read_iops_sec=-1"], /qosSpecs\.read_iops_sec/, 2],
      ["spec without =", ["volume", "create", "x", "--size", "1", "--spec", "preallocation"], /--spec/, 2],
      ["two sources", ["volume", "create", "x", "--from-snapshot", "a", "--from-volume", "b"], /--from-snapshot/, 2],
      ["unknown pool", ["volume", "create", "x", "--size", "1", "--pool", "nope"], /pool/, 2],
      ["unknown flag", ["volume", "create", "x", "--size", "1", "--colour", "red"], /--colour/, 2],
      ["flag of another command", ["volume", "list", "--size", "1"], /--size: not an option of `kindling volume list`/, 2],
      ["unknown command", ["volume", "explode"], /unknown command "volume explode"/, 2],
      ["unknown backend", ["--backend", "nope", "volume", "list"], /no backend named "nope"/, 2],
      ["missing volume", ["volume", "show", "ghost"], /volume "ghost" not found/, 3],
      ["bad connector json", ["validate-connector", "--protocol", "local", "--connector", "{x"], /--connector/, 2],
      ["foreign host", ["validate-connector", "--protocol", "local", "--connector", '{"host":"elsewhere.invalid"}'], /connector\.host/, 2],
      ["unknown protocol", ["validate-connector", "--protocol", "fc", "--connector", "{}"], /^kindling: protocol:/, 2],
    ];
    for (const [label, args, message, code] of cases) {
      test(label, () => {
        const before = listTree(dir);
        const r = k("--backend", "local", ...args);
        assert.equal(r.code, code, r.stderr);
        assert.match(r.stderr, message);
        assert.equal(r.stdout, "");
        assert.deepEqual(listTree(dir).filter((f) => !f.includes("kindling.db")), before.filter((f) => !f.includes("kindling.db")));
        assert.deepEqual(ok(k("--backend", "local", "--json", "volume", "list")).json(), []);
      });
    }
  });

  test("bad configuration files name the key", () => {
    const bad = join(dir, "bad.json");
    writeFileSync(bad, JSON.stringify({ backends: { local: { driver: "file", path: "v", colour: "red" } } }));
    let r = kindling(["--config", bad, "backends"], { env });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /backends\.local\.colour: unknown field/);
    writeFileSync(bad, JSON.stringify({ backends: { local: { driver: "lvm" } } }));
    r = kindling(["--config", bad, "backends"], { env });
    assert.match(r.stderr, /backends\.local\.driver: unknown driver "lvm"/);
    assert.ok(!existsSync(join(dir, "v")));
    // A JSON key "__proto__" is an own key to JSON.parse but vanishes in a plain object: refused, not lost.
    writeFileSync(bad, '{"backends": {"__proto__": {"driver": "file", "path": "v"}}}');
    r = kindling(["--config", bad, "backends"], { env });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /backends\.__proto__: "__proto__" cannot be a key/);
    writeFileSync(bad, '{"backends": {"local": {"driver": "file", "pools": {"fast": "a", "__proto__": "b"}}}}');
    r = kindling(["--config", bad, "backends"], { env });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /backends\.local\.pools\.__proto__: "__proto__" cannot be a key/);
    assert.ok(!existsSync(join(dir, "a")) && !existsSync(join(dir, "b")));
  });

  test("configuration precedence: --config, $KINDLING_CONFIG, ./kindling.json, embedded default", () => {
    const cwd = join(dir, "cwd");
    mkdirSync(cwd);
    const xdg = join(dir, "xdg-default");
    const source = (args: string[], extra: Record<string, string> = {}) =>
      ok(kindling([...args, "--json", "backends"], { cwd, env: { XDG_DATA_HOME: xdg, ...extra } })).json().source;
    assert.equal(source([]), "embedded default");
    writeFileSync(join(cwd, "kindling.json"), JSON.stringify({ backends: { here: { driver: "file", path: "v" } } }));
    assert.equal(source([]), join(cwd, "kindling.json"));
    assert.equal(source([], { KINDLING_CONFIG: config }), config);
    const flag = join(dir, "flag.json");
    writeFileSync(flag, JSON.stringify({ backends: { flag: { driver: "file", path: "f" } } }));
    assert.equal(source(["--config", flag], { KINDLING_CONFIG: config }), flag);
  });

  test("the embedded default keeps volumes and records under $XDG_DATA_HOME/kindling", () => {
    const xdg = join(dir, "xdg-embedded");
    const cwd = join(dir, "empty-cwd"); // no kindling.json here
    mkdirSync(cwd);
    const run = (...args: string[]) => ok(kindling(args, { cwd, env: { XDG_DATA_HOME: xdg } }));
    const v = run("--json", "volume", "create", "default-one", "--size", "1").json();
    assert.equal(v.backend, "local");
    assert.equal(dirname(v.location), join(xdg, "kindling", "volumes"));
    assert.ok(existsSync(join(xdg, "kindling", "volumes", ".kindling", "kindling.db")));
    run("volume", "delete", "default-one");
  });

  test("attach prints a loop device of the volume's size; delete while attached is refused; detach releases it", (t) => {
    if (needsRoot(t)) return;
    ok(k("--backend", "local", "volume", "create", "attached", "--size", "1"));
    const device = ok(k("--backend", "local", "attach", "attached")).stdout.trim();
    try {
      assert.match(device, /^\/dev\/loop\d+$/);
      assert.equal(deviceSize(device), GiB);
      const refused = k("--backend", "local", "volume", "delete", "attached");
      assert.equal(refused.code, 4);
      assert.ok(refused.stderr.includes(device), refused.stderr);
      ok(k("--backend", "local", "volume", "extend", "attached", "--size", "2"));
      assert.equal(deviceSize(device), 2 * GiB, "the attached device shows the new size");
      const again = k("--backend", "local", "attach", "attached");
      assert.equal(again.code, 4);
    } finally {
      ok(k("--backend", "local", "detach", "attached"));
    }
    const file = join(dir, "volumes", `volume-${ok(k("--backend", "local", "--json", "volume", "show", "attached")).json().id}`);
    assert.doesNotMatch(sh("losetup", ["--list", "--noheadings", "--output", "BACK-FILE"]), new RegExp(file));
    const json = ok(k("--backend", "local", "--json", "attach", "attached", "--read-only")).json();
    assert.equal(json.attachMode, "ro");
    ok(k("--backend", "local", "disconnect", "attached"));
    ok(k("--backend", "local", "volume", "delete", "attached"));
  });

  test("connect and disconnect record connection info", () => {
    ok(k("--backend", "local", "volume", "create", "shared", "--size", "1", "--qos", "total_iops_sec=10"));
    const c = ok(k("--backend", "local", "--json", "connect", "shared", "--protocol", "local", "--mode", "ro")).json();
    assert.equal(c.protocol, "local");
    assert.equal(c.connectionInfo.data.access_mode, "ro");
    assert.deepEqual(c.connectionInfo.data.qos_specs, { total_iops_sec: "10" });
    assert.equal(ok(k("--backend", "local", "--json", "volume", "show", "shared")).json().status, "in-use");
    assert.equal(ok(k("--backend", "local", "--json", "disconnect", "shared")).json().disconnected.length, 1);
    assert.equal(ok(k("--backend", "local", "--json", "volume", "show", "shared")).json().status, "available");
    ok(k("--backend", "local", "volume", "delete", "shared"));
  });

  test("--help and --version", () => {
    assert.match(ok(kindling(["--help"])).stdout, /usage: kindling/);
    assert.match(ok(kindling(["--version"])).stdout, /^\d+\.\d+\.\d+\n$/);
  });
});
