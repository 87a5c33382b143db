// The engine at scale and under faults: many volumes in parallel, a `pulumi up` killed with
// creates in flight, secrets in state, and state written by an earlier build.
import assert from "node:assert/strict";
import { cpSync, existsSync, readdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Backend } from "../provider/library";
import { readAt, writeAt } from "./helpers/backends";
import { kindling } from "./helpers/cli";
import { PATTERN, removeDir, tempDir } from "./helpers/env";
import { fileProject, Project, ROOT, type Resource } from "./helpers/pulumi";

const volumes = (count: number, prefix = "v"): Resource[] =>
  Array.from({ length: count }, (_, i) => ({ type: "Volume" as const, name: `${prefix}${i}`, args: { sizeGiB: 1 } }));

function setup(name: string) {
  const { dir, pool, config, project } = fileProject(name);
  const list = () => {
    const r = kindling(["--config", config, "--json", "volume", "list"]);
    assert.equal(r.code, 0, r.stderr);
    return r.json() as Array<{ id: string; name: string; status: string }>;
  };
  const files = () => (existsSync(pool) ? readdirSync(pool).filter((f) => f.startsWith("volume-")).sort() : []);
  const cleanup = () => {
    project.run(["destroy", "--yes"]);
    removeDir(project.dir);
    removeDir(dir);
  };
  return { dir, pool, config, project, list, files, cleanup };
}

describe("the engine at scale and under faults", () => {
  const cleanups: Array<() => void> = [];
  after(() => cleanups.forEach((c) => c()));

  test("8. kill -9 of `pulumi up` while 20 volumes are created, then up again: exactly the declared volumes", async () => {
    const s = setup("killed");
    cleanups.push(s.cleanup);
    s.project.program(volumes(20));
    const child = s.project.start(["up", "--yes", "--skip-preview", "--parallel", "4"]);
    // Kill once some, but not all, volumes exist.
    for (let i = 0; i < 600 && s.files().length < 3; i++) await sleep(50);
    child.kill("SIGKILL");
    await new Promise((resolve) => child.once("exit", resolve));
    const made = s.files().length;
    assert.ok(made > 0, "the kill came after some volumes were made");
    // A killed update leaves the stack locked or with pending operations; cancel what can be.
    s.project.run(["cancel", "--yes"]);
    const again = s.project.run(["up", "--yes", "--skip-preview"]);
    assert.equal(again.code, 0, again.stdout + again.stderr);
    const listed = s.list();
    assert.equal(listed.length, 20, `volumes: ${listed.map((v) => v.name).join(", ")}`);
    assert.equal(new Set(listed.map((v) => v.name)).size, 20, "no volume twice");
    assert.ok(listed.every((v) => v.status === "available"));
    assert.equal(s.files().length, 20, "no leaked files");
    assert.equal(Object.keys(s.project.stateResources()).length, 20);
  });

  test("10. 40 volumes with --parallel 16: all created, records and files consistent", () => {
    const s = setup("many");
    cleanups.push(s.cleanup);
    s.project.program(volumes(40));
    s.project.up(["--parallel", "16"]);
    const listed = s.list();
    assert.equal(listed.length, 40);
    assert.deepEqual(s.files(), listed.map((v) => `volume-${v.id}`).sort());
    assert.equal(Object.keys(s.project.stateResources()).length, 40);
    s.project.ok(["destroy", "--yes", "--parallel", "16"]);
    assert.deepEqual(s.list(), []);
    assert.deepEqual(s.files(), []);
  });

  test("11. a backend secret never appears in `pulumi stack export` in clear text", () => {
    const s = setup("secretive");
    cleanups.push(s.cleanup);
    // A custom persistence plugin that needs a token: the kind of secret a backend carries.
    const plugin = join(s.dir, "token-store.js");
    writeFileSync(plugin, `
      const { SqlitePersistence } = require(${JSON.stringify(join(ROOT, "dist", "provider", "persistence", "sqlite"))});
      exports.createPersistence = ({ token, path }) => {
        if (token !== "s3cr3t-t0ken-value") throw new Error("wrong token");
        return new SqlitePersistence(path);
      };`);
    const backend = { name: "secretive", driver: "file", path: s.pool, persistence: { storage: "custom", module: plugin, options: { path: join(s.dir, "records.db") } } };
    const project = new Project(backend, "kindling-secrets");
    cleanups.push(() => {
      project.run(["destroy", "--yes"]);
      removeDir(project.dir);
    });
    project.init();
    project.program([{ type: "Volume", name: "v", args: { sizeGiB: 1 } }, { type: "Snapshot", name: "s", args: { volumeId: "@v.volumeId" } }], { secret: "s3cr3t-t0ken-value" });
    project.up();
    const exported = project.ok(["stack", "export"]).stdout;
    assert.ok(!exported.includes("s3cr3t-t0ken-value"), "the token is not in the state in clear text");
    assert.match(exported, /"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270"/, "it is there, as a secret");
    project.ok(["refresh", "--yes"]);
    assert.ok(!project.ok(["stack", "export"]).stdout.includes("s3cr3t-t0ken-value"));
    project.ok(["destroy", "--yes"]);
    assert.deepEqual(s.files(), []);
  });

  test("12. state written by a previous build refreshes and deletes with the current build", async () => {
    const s = setup("upgraded");
    cleanups.push(s.cleanup);
    // The previous build: a copy of kindling as installed then; the project uses it for `up`.
    const previous = join(s.dir, "previous-build");
    cpSync(join(ROOT, "package.json"), join(previous, "package.json"));
    cpSync(join(ROOT, "dist"), join(previous, "dist"), { recursive: true });
    symlinkSync(join(ROOT, "node_modules"), join(previous, "node_modules"));
    const link = join(s.project.dir, "node_modules", "kindling");
    unlinkSync(link);
    symlinkSync(previous, link);
    s.project.program([{ type: "Volume", name: "kept", args: { sizeGiB: 1 } }]);
    s.project.up();
    const id = s.project.outputs().kept.id;
    const backend = await Backend.open({ name: "upgraded", driver: "file", path: s.pool });
    await writeAt(await backend.getVolume(id), PATTERN);
    // Upgrade: the previous build is gone, the current one installed.
    unlinkSync(link);
    symlinkSync(ROOT, link);
    rmSync(previous, { recursive: true });
    cli(s, "volume", "extend", id, "--size", "2");
    s.project.ok(["refresh", "--yes"]);
    assert.equal(s.project.stateResources().kept.outputs.sizeGiB, 2, "refresh ran the current code");
    assert.deepEqual(await readAt(await backend.getVolume(id), PATTERN.length), PATTERN);
    await backend.close();
    s.project.ok(["destroy", "--yes"]);
    assert.deepEqual(s.files(), []);
  });

  test("adoption: an existing volume comes under management without copying its data", async () => {
    const s = setup("adopting");
    cleanups.push(s.cleanup);
    const made = cli(s, "volume", "create", "legacy", "--size", "1");
    const backend = await Backend.open({ name: "adopting", driver: "file", path: s.pool });
    await writeAt(await backend.getVolume(made.id), PATTERN);
    s.project.program([{ type: "Volume", name: "legacy", args: { sizeGiB: 2, adopt: "legacy", name: "legacy" } }]);
    s.project.up();
    const out = s.project.outputs().legacy;
    assert.equal(out.id, made.id, "the same volume, not a copy");
    assert.equal(s.files().length, 1);
    const volume = await backend.getVolume(made.id);
    assert.equal(volume.sizeGiB, 2, "grown to the program's size");
    assert.deepEqual(await readAt(volume, PATTERN.length), PATTERN);
    // Once adopted, the `adopt` input can go.
    s.project.program([{ type: "Volume", name: "legacy", args: { sizeGiB: 2, name: "legacy" } }]);
    assert.ok([undefined, "same"].includes(s.project.previewSteps().legacy));
    await backend.close();
  });
});

function cli(s: { config: string }, ...args: string[]) {
  const r = kindling(["--config", s.config, "--json", ...args]);
  assert.equal(r.code, 0, r.stderr);
  return r.json();
}
