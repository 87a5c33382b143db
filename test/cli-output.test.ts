// Input that looks harmless, through bin/kindling as a user runs it: names shaped like ids,
// invisible and control characters, reserved map keys, QoS values with leading zeros, config
// paths that are empty or start with ~; and text output that a terminal could be made to act on.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { NAME_COLUMN_WIDTH, cut, displayWidth, fields, printable, table } from "../provider/cli/output";
import { Backend } from "../provider/library";
import { SqlitePersistence } from "../provider/persistence/sqlite";
import { KINDLING, kindling, ok } from "./helpers/cli";
import { listTree, removeDir, tempDir } from "./helpers/env";

const ESC = "\u001b";

describe("kindling refuses input that looks harmless", () => {
  let dir: string;
  let config: string;
  let env: Record<string, string>;
  const k = (...args: string[]) => kindling(["--config", config, ...args], { env });
  /** Every record's name, read from the records database directly (quicker than a command). */
  const recordNames = async () => {
    const persistence = new SqlitePersistence(join(dir, "state", "kindling.db"));
    try {
      return [...(await persistence.getVolumes()), ...(await persistence.getSnapshots())].map((r) => r.name).sort();
    } finally {
      await persistence.close();
    }
  };
  /** Runs `args`, expects exit 2 and `message` on stderr, nothing on stdout, no new file or record. */
  const refused = async (args: string[], message: RegExp) => {
    const before = listTree(dir);
    const namesBefore = await recordNames();
    const r = k(...args);
    assert.equal(r.code, 2, `exit ${r.code}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.equal(r.stdout, "");
    assert.deepEqual(listTree(dir), before, "no file was created");
    assert.deepEqual(await recordNames(), namesBefore, "no record was created");
    return r;
  };

  before(() => {
    dir = tempDir();
    env = { XDG_DATA_HOME: join(dir, "xdg") };
    config = join(dir, "kindling.json");
    writeFileSync(config, JSON.stringify({ persistence: { storage: "sqlite", path: "state/kindling.db" }, backends: { local: { driver: "file", path: "volumes" } } }));
    ok(k("volume", "list")); // the records database exists from here on, so "no file created" is exact
  });
  after(() => removeDir(dir));

  test("D13: a volume named like another volume's id is refused, and `volume delete <that id>` deletes only that volume", async () => {
    const prod = ok(k("--json", "volume", "create", "prod", "--size", "1")).json();
    const other = ok(k("--json", "volume", "create", "other", "--size", "1")).json();
    for (const name of [prod.id, prod.id.toUpperCase()]) {
      await refused(["volume", "create", name, "--size", "1"], /^kindling: name: must not be a UUID/);
      await refused(["volume", "clone", "other", name], /^kindling: name: must not be a UUID/);
      await refused(["volume", "create", name, "--from-volume", "other"], /^kindling: name: must not be a UUID/);
      await refused(["snapshot", "create", "other", name], /^kindling: name: must not be a UUID/);
    }
    assert.equal(ok(k("volume", "delete", prod.id)).stdout, "deleted volume prod\n");
    const left = ok(k("--json", "volume", "list")).json();
    assert.deepEqual(left.map((v: { id: string }) => v.id), [other.id]);
    assert.ok(existsSync(join(dir, "volumes", `volume-${other.id}`)));
    ok(k("volume", "delete", "other"));
  });

  test("D12: an upper-case id given to the library is recorded in lower case; the command shows and deletes it", async () => {
    const given = "FFFFFFFF-FFFF-4FFF-8FFF-FFFFFFFFFFFF";
    const persistence = new SqlitePersistence(join(dir, "state", "kindling.db"));
    const backend = await Backend.open({ name: "local", driver: "file", path: join(dir, "volumes") }, { persistence });
    try {
      await backend.createVolume({ sizeGiB: 1, name: "upper", id: given });
    } finally {
      await backend.close();
      await persistence.close();
    }
    const listed = ok(k("--json", "volume", "list")).json();
    assert.deepEqual(listed.map((v: { id: string; status: string }) => [v.id, v.status]), [[given.toLowerCase(), "available"]]);
    assert.equal(ok(k("--json", "volume", "show", given.toLowerCase())).json().name, "upper");
    assert.equal(ok(k("--json", "volume", "show", given)).json().name, "upper", "found by its id in either case");
    assert.equal(ok(k("volume", "delete", given)).stdout, "deleted volume upper\n");
    assert.deepEqual(ok(k("--json", "volume", "list")).json(), [], "no error record left behind");
  });

  const lookalikes: Array<[string, string, RegExp]> = [
    ["ESC", "a\u001b[31mred", /name: must be printable \(no control characters or line breaks; found U\+001B\)/],
    ["a C1 control (NEL)", "a\u0085b", /name: must be printable.*U\+0085/],
    ["DEL", "a\u007f", /name: must be printable.*U\+007F/],
    ["a right-to-left override", "txt.\u202egpj", /name: must not contain bidirectional text controls.*U\+202E/],
    ["a first-strong isolate", "a\u2068b", /name: must not contain bidirectional text controls.*U\+2068/],
    ["a right-to-left mark", "a\u200f", /name: must not contain bidirectional text controls.*U\+200F/],
    ["a zero-width space", "a\u200bb", /name: must not contain zero-width or invisible characters \(found U\+200B\)/],
    ["a zero-width joiner", "a\u200db", /name: must not contain zero-width or invisible characters.*U\+200D/],
    ["a byte order mark", "\ufeffa", /name: must not contain zero-width or invisible characters.*U\+FEFF/],
    ["a lone space", " ", /name: must not start or end with whitespace/],
    ["a trailing space", "a ", /name: must not start or end with whitespace/],
    ["a leading no-break space", "\u00a0a", /name: must not start or end with whitespace/],
  ];
  describe("names with invisible, control or edge-whitespace characters", () => {
    before(() => ok(k("volume", "create", "base", "--size", "1")));
    after(() => ok(k("volume", "delete", "base")));
    for (const [label, name, message] of lookalikes) {
      test(`a volume or snapshot name with ${label} is refused with exit 2, naming the rule`, async () => {
        await refused(["volume", "create", name, "--size", "1"], message);
        await refused(["snapshot", "create", "base", name], message);
      });
    }
  });

  test("a name given as invalid UTF-8 in argv (it arrives as U+FFFD) is refused as not UTF-8", async () => {
    // Node cannot pass arbitrary bytes in argv, so python3 execs the command with them.
    const run = (nameHex: string) => spawnSync("python3", ["-c", [
      "import os, sys",
      "k = sys.argv[1]",
      "args = [bytes.fromhex(a[4:]) if a.startswith('hex:') else a.encode() for a in sys.argv[2:]]",
      "os.execve(k, [k.encode()] + args, os.environ)",
    ].join("\n"), KINDLING, "--config", config, "volume", "create", `hex:${nameHex}`, "--size", "1"], { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env }, encoding: "utf8" });
    const before = listTree(dir);
    for (const hex of ["61ff62", "c0af", "edb080"]) { // a\xffb, an overlong '/', a UTF-8-encoded surrogate
      const r = run(hex);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /^kindling: name: must be valid UTF-8 \(found U\+FFFD/);
    }
    assert.deepEqual(listTree(dir), before);
    assert.deepEqual(await recordNames(), []);
  });

  for (const flag of ["--meta", "--spec", "--qos"]) {
    for (const key of ["__proto__", "constructor", "prototype"]) {
      test(`${flag} ${key}=x is refused with exit 2 naming the flag, not dropped`, async () => {
        const rule = new RegExp(`^kindling: ${flag}: "${key}" cannot be a key \\(__proto__, constructor, prototype are reserved\\)`);
        await refused(["volume", "create", "meta", "--size", "1", flag, `${key}=x`], rule);
        await refused(["volume", "create", "meta", "--size", "1", "--meta", "team=db", flag, `${key}=x`], rule);
      });
    }
  }

  test("--meta __proto__=x is refused on copies too, before anything is copied", async () => {
    ok(k("volume", "create", "base", "--size", "1"));
    try {
      await refused(["volume", "create", "copy", "--from-volume", "base", "--meta", "__proto__=x"], /--meta: "__proto__" cannot be a key/);
    } finally {
      ok(k("volume", "delete", "base"));
    }
  });

  test("a connector with a reserved key is refused naming --connector, or the nested key", async () => {
    await refused(["validate-connector", "--protocol", "local", "--connector", '{"__proto__": {"host": "elsewhere"}}'], /^kindling: --connector: "__proto__" cannot be a key/);
    await refused(["validate-connector", "--protocol", "local", "--connector", '{"options": {"constructor": 1}}'], /^kindling: connector\.options\.constructor: "constructor" cannot be a key/);
    await refused(["validate-connector", "--protocol", "local", "--connector", JSON.stringify({ host: "x".repeat(17 * 1024) })], /^kindling: connector: must be at most 16 KiB as JSON/);
  });

  test("--qos total_iops_sec=00010 says which form is wanted", async () => {
    await refused(["volume", "create", "q", "--size", "1", "--qos", "total_iops_sec=00010"], /^kindling: qosSpecs\.total_iops_sec: must be written without leading zeros: 10, not 00010\n/);
    await refused(["volume", "create", "q", "--size", "1", "--qos", "total_iops_sec=+10"], /^kindling: qosSpecs\.total_iops_sec: must be a positive whole number in plain digits, without sign, decimal point or leading zeros \(e\.g\. 10\)/);
  });
});

describe("kindling's text output never sends a terminal raw control sequences", () => {
  let dir: string;
  let config: string;
  let env: Record<string, string>;
  const k = (...args: string[]) => kindling(["--config", config, ...args], { env });
  /** Characters a terminal acts on or hides, none of which may reach it raw. */
  const raw = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/u;

  before(() => {
    dir = tempDir();
    env = { XDG_DATA_HOME: join(dir, "xdg") };
    config = join(dir, "kindling.json");
    writeFileSync(config, JSON.stringify({ persistence: { storage: "sqlite", path: "state/kindling.db" }, backends: { local: { driver: "file", path: "volumes" } } }));
  });
  after(() => removeDir(dir));

  test("volume show of a description and metadata holding ESC sequences prints no ESC byte; --json stays exact", () => {
    const description = `line1\nline2${ESC}[31mRED${ESC}]0;owned\u0007 \u202eevil\u200b`;
    const metadata = [`k${ESC}[2J=v\u202e`, `team=db${ESC}[0m`];
    const created = ok(k("--json", "volume", "create", "painted", "--size", "1", "--description", description, ...metadata.flatMap((m) => ["--meta", m]))).json();
    assert.equal(created.description, description, "--json gives the description exactly");
    assert.deepEqual(created.metadata, { [`k${ESC}[2J`]: "v\u202e", team: `db${ESC}[0m` });

    const shown = ok(k("volume", "show", "painted")).stdout;
    assert.doesNotMatch(shown, raw, "nothing a terminal acts on");
    const line = shown.split("\n").find((l) => l.startsWith("description"));
    assert.equal(line, "description  line1\\nline2\\x1b[31mRED\\x1b]0;owned\\x07 \\u202eevil\\u200b", "one line, escapes shown");
    const metaLine = shown.split("\n").find((l) => l.startsWith("metadata")) ?? "";
    assert.ok(metaLine.includes("\\u202e"), metaLine);
    assert.ok(metaLine.includes("\\u001b[2J"), metaLine);

    const json = ok(k("--json", "volume", "show", "painted")).json();
    assert.equal(json.description, description);
    assert.deepEqual(json.metadata, created.metadata);

    const snap = ok(k("--json", "snapshot", "create", "painted", "snap", "--description", `s${ESC}[1m`)).json();
    assert.equal(snap.description, `s${ESC}[1m`);
    assert.doesNotMatch(ok(k("snapshot", "show", "snap")).stdout, raw);
    ok(k("snapshot", "delete", "snap"));
    ok(k("volume", "delete", "painted"));
  });

  test("a name kept in the records from before names were checked is shown escaped in lists and messages", async () => {
    const persistence = new SqlitePersistence(join(dir, "state", "kindling.db"));
    const backend = await Backend.open({ name: "local", driver: "file", path: join(dir, "volumes") }, { persistence });
    let id: string;
    try {
      const volume = await backend.createVolume({ sizeGiB: 1, name: "plain" });
      id = volume.id;
      // load({save}) is the stateless restore: it writes records as given.
      await backend.load({ ...volume.dump(), name: `old${ESC}[2J\u202eeman` }, { save: true });
    } finally {
      await backend.close();
      await persistence.close();
    }
    const list = ok(k("volume", "list")).stdout;
    assert.doesNotMatch(list, raw);
    assert.ok(list.includes("old\\x1b[2J\\u202eeman"), list);
    const deleted = ok(k("volume", "delete", id)).stdout;
    assert.equal(deleted, "deleted volume old\\x1b[2J\\u202eeman\n");
  });

  test("a 255-byte name does not pad every row of volume list or snapshot list: the NAME column is cut", () => {
    const long = "n".repeat(255);
    const wide = `${"é".repeat(127)}x`; // 255 bytes, 128 characters
    for (const name of [long, wide, "short"]) ok(k("volume", "create", name, "--size", "1"));
    ok(k("snapshot", "create", "short", long));

    const lines = ok(k("volume", "list")).stdout.trimEnd().split("\n");
    assert.equal(lines.length, 4);
    const idColumn = lines[0].indexOf("ID");
    assert.equal(idColumn, NAME_COLUMN_WIDTH + 2, "the NAME column is as wide as the cut, no wider");
    for (const line of lines.slice(1)) {
      assert.match(line.slice(idColumn), /^[0-9a-f-]{36} /, `every row's id starts in the same column: ${line}`);
      assert.ok(line.length < 120, `no row is padded to the long name: ${line.length} characters`);
    }
    assert.ok(lines.some((l) => l.startsWith(`${"n".repeat(NAME_COLUMN_WIDTH - 1)}…  `)), "the long name is cut with an ellipsis");
    assert.ok(lines.some((l) => l.startsWith(`${"é".repeat(NAME_COLUMN_WIDTH - 1)}…  `)), "cut by characters, not bytes");
    assert.ok(lines.some((l) => l.startsWith(`short${" ".repeat(NAME_COLUMN_WIDTH - 3)}`)));

    const snaps = ok(k("snapshot", "list")).stdout.trimEnd().split("\n");
    assert.equal(snaps[0].indexOf("ID"), NAME_COLUMN_WIDTH + 2);
    assert.ok(snaps[1].startsWith(`${"n".repeat(NAME_COLUMN_WIDTH - 1)}…`));

    // The whole name is still there for --json and show.
    assert.ok(ok(k("--json", "volume", "list")).json().some((v: { name: string }) => v.name === long));
    assert.match(ok(k("volume", "show", long)).stdout, new RegExp(`^name +${long}$`, "m"));
    ok(k("snapshot", "delete", long));
    for (const name of [long, wide, "short"]) ok(k("volume", "delete", name));
  });
});

describe("config paths: empty and ~", () => {
  let dir: string;
  let home: string;
  let env: Record<string, string>;
  const file = () => join(dir, "kindling.json");
  const run = (config: unknown, ...args: string[]) => {
    writeFileSync(file(), JSON.stringify(config));
    return kindling(["--config", file(), ...args], { env, cwd: dir });
  };

  before(() => {
    dir = tempDir();
    home = join(dir, "home");
    mkdirSync(home);
    env = { HOME: home, XDG_DATA_HOME: join(dir, "xdg") };
  });
  after(() => removeDir(dir));

  test('"path": "" is refused naming the field; nothing is made in the config file\'s directory', () => {
    for (const [backend, field] of [[{ driver: "file", path: "" }, "backends.local.path"], [{ driver: "file", pools: { a: "" } }, "backends.local.pools.a"]] as const) {
      writeFileSync(file(), "{}");
      const before = readdirSync(dir).sort();
      const r = run({ backends: { local: backend } }, "volume", "create", "x", "--size", "1");
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr, `kindling: ${field}: must be a directory path\n`);
      assert.deepEqual(readdirSync(dir).sort(), before, "no volume file, no .kindling records beside the config");
    }
    const r = run({ persistence: { storage: "sqlite", path: "" }, backends: { local: { driver: "file", path: "v" } } }, "volume", "list");
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^kindling: persistence\.path: must be a database file path/);
    assert.ok(!existsSync(join(dir, "v")));
  });

  test("~ and ~/... in backend and persistence paths are the home directory, not a directory named ~", () => {
    const config = {
      persistence: { storage: "sqlite", path: "~/state/kindling.db" },
      backends: { local: { driver: "file", path: "~/volumes" } },
    };
    const v = run(config, "--json", "volume", "create", "at-home", "--size", "1");
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.json().location, join(home, "volumes", `volume-${v.json().id}`));
    assert.ok(existsSync(join(home, "state", "kindling.db")));
    assert.ok(!existsSync(join(dir, "~")), "no literal ~ directory");
    assert.equal(run(config, "volume", "delete", "at-home").code, 0);

    const own = { backends: { local: { driver: "file", path: "~", persistence: { storage: "json", path: "~/records" } } } };
    const w = run(own, "--json", "volume", "create", "in-home", "--size", "1");
    assert.equal(w.code, 0, w.stderr);
    assert.equal(w.json().location, join(home, `volume-${w.json().id}`));
    assert.ok(existsSync(join(home, "records")), "a backend's own persistence path is expanded too");
    assert.equal(run(own, "volume", "delete", "in-home").code, 0);
    assert.ok(!existsSync(join(dir, "~")));
  });

  test("~user/... is refused naming the field", () => {
    const cases: Array<[unknown, string]> = [
      [{ backends: { local: { driver: "file", path: "~root/volumes" } } }, "backends.local.path"],
      [{ backends: { local: { driver: "file", pools: { a: "~nobody/a" } } } }, "backends.local.pools.a"],
      [{ persistence: { storage: "sqlite", path: "~root/k.db" }, backends: { local: { driver: "file", path: "v" } } }, "persistence.path"],
      [{ backends: { local: { driver: "file", path: "v", persistence: { storage: "json", path: "~root/r" } } } }, "backends.local.persistence.path"],
    ];
    for (const [config, field] of cases) {
      const r = run(config, "volume", "list");
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`^kindling: ${field.replaceAll(".", "\\.")}: "~[a-z]+[^"]*": only ~ and ~/\\.\\.\\. are expanded`));
    }
    assert.ok(!existsSync(join(dir, "v")));
  });
});

describe("output helpers", () => {
  test("printable escapes controls, DEL, C1, bidi and invisible characters, and keeps ordinary text", () => {
    assert.equal(printable(`a${ESC}[31mb\u0007\u007f\u0085\u009b`), "a\\x1b[31mb\\x07\\x7f\\x85\\x9b");
    assert.equal(printable("x\u202ey\u2066z\u200e\u061c"), "x\\u202ey\\u2066z\\u200e\\u061c");
    assert.equal(printable("a\u200b\u200c\u200d\u2060\ufeffb"), "a\\u200b\\u200c\\u200d\\u2060\\ufeffb");
    assert.equal(printable("a\nb\tc\rd"), "a\\nb\\tc\\rd");
    assert.equal(printable("a\nb", { keepNewlines: true }), "a\nb");
    assert.equal(printable("lone \ud800 tag \u{e0041}"), "lone \\ud800 tag \\u{e0041}");
    assert.equal(printable("plain ascii, é, 日本, 🚀, a\u00a0b"), "plain ascii, é, 日本, 🚀, a\u00a0b");
  });

  test("cut stops at the width with an ellipsis, never inside an escape or a character", () => {
    assert.equal(cut("short", 40), "short");
    assert.equal(cut("n".repeat(41), 40), `${"n".repeat(39)}…`);
    assert.equal(displayWidth(cut("🇫🇷".repeat(50), 40)), 40);
    assert.equal(cut(`${"a".repeat(37)}${ESC}[2J`, 40), `${"a".repeat(37)}…`, "the 4-character escape does not fit, and is not split");
    assert.equal(cut(`ab${ESC}`, 40), "ab\\x1b");
  });

  test("table and fields show cells printable and on one line", () => {
    const t = table(["NAME", "X"], [[`a${ESC}b`, "1"], ["n".repeat(50), "2"]], { maxWidths: { NAME: 10 } });
    assert.equal(t, ["NAME        X", "a\\x1bb      1", `${"n".repeat(9)}…  2`].join("\n"));
    assert.equal(fields({ description: "a\nb", meta: { [`k${ESC}`]: "\u202e" } }), 'description  a\\nb\nmeta         {"k\\u001b":"\\u202e"}');
  });
});
