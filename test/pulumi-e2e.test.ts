// kindling's Pulumi resources through the real engine: `pulumi up`, `preview`, `refresh`,
// `destroy` on a local state backend, with the volumes checked through the kindling command
// and the library.
import assert from "node:assert/strict";
import { existsSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Backend } from "../provider/library";
import { GiB } from "../provider/util/sizes";
import { readAt, writeAt } from "./helpers/backends";
import { kindling } from "./helpers/cli";
import { PATTERN, deviceSize, isRoot, removeDir, sh, tempDir } from "./helpers/env";
import { Project, type Resource } from "./helpers/pulumi";

function volumeFiles(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).filter((f) => f.startsWith("volume-")).sort() : [];
}

describe("Pulumi resources through the engine", () => {
  let dir: string;
  let pool: string;
  let config: string;
  let project: Project;
  const cli = (...args: string[]) => {
    const r = kindling(["--config", config, "--json", ...args]);
    assert.equal(r.code, 0, r.stderr);
    return r.json();
  };
  const backendConfig = () => ({ name: "e2e", driver: "file", path: pool });

  // The stack of scenarios 1-6 and 9: a volume, a snapshot, a clone, a volume from the
  // snapshot and (as root) a local attachment.
  let size = 1;
  let restoredFrom = "@snap.snapshotId";
  const resources = (): Resource[] => [
    { type: "Volume", name: "data", args: { sizeGiB: size, metadata: { role: "db" } } },
    { type: "Snapshot", name: "snap", args: { volumeId: "@data.volumeId" } },
    { type: "Snapshot", name: "snap2", args: { volumeId: "@data.volumeId" } },
    { type: "Volume", name: "copy", args: { sizeGiB: "@data.sizeGiB", sourceVolumeId: "@data.volumeId" } },
    { type: "Volume", name: "restored", args: { sizeGiB: 2, snapshotId: restoredFrom } },
    ...(isRoot ? [{ type: "Attachment" as const, name: "here", args: { volumeId: "@data.volumeId", protocol: "local", attachLocally: true } }] : []),
  ];

  before(() => {
    dir = tempDir();
    pool = join(dir, "volumes");
    config = join(dir, "kindling.json");
    writeFileSync(config, JSON.stringify({ backends: { e2e: { driver: "file", path: pool } } }));
    project = new Project(backendConfig());
    project.init();
  });
  after(() => {
    if (project) {
      project.run(["destroy", "--yes"]);
      removeDir(project.dir);
    }
    removeDir(dir);
  });

  test("1. up creates everything; outputs agree with `kindling volume show`", async () => {
    project.program(resources());
    project.up();
    const out = project.outputs();
    for (const name of ["data", "copy", "restored"]) {
      const shown = cli("volume", "show", out[name].id);
      assert.equal(shown.name, out[name].name);
      assert.equal(shown.sizeGiB, out[name].sizeGiB);
      assert.equal(shown.location, out[name].location);
      assert.equal(shown.status, name === "data" && isRoot ? "in-use" : "available");
    }
    assert.match(out.data.name, /^data-[0-9a-f]{8}$/, "default name: resource name and a stable suffix");
    assert.equal(cli("volume", "show", out.copy.id).sourceVolumeId, out.data.id);
    assert.equal(cli("volume", "show", out.restored.id).snapshotId, out.snap.id);
    assert.equal(cli("snapshot", "show", out.snap.id).volumeId, out.data.id);
    if (isRoot) {
      assert.match(out.here.devicePath as string, /^\/dev\/loop\d+$/);
      assert.equal(deviceSize(out.here.devicePath as string), GiB);
    }
    assert.equal(volumeFiles(pool).length, 3);
  });

  test("2. raising sizeGiB is an in-place update that keeps the data", async () => {
    const out = project.outputs();
    const backend = await Backend.open(backendConfig());
    await writeAt(await backend.getVolume(out.data.id), PATTERN, 4096);
    size = 2;
    project.program(resources());
    const steps = project.previewSteps();
    assert.equal(steps.data, "update");
    assert.ok(!Object.values(steps).includes("replace"), JSON.stringify(steps));
    project.up();
    const volume = await backend.getVolume(out.data.id);
    assert.equal(volume.sizeGiB, 2);
    assert.equal((await volume.inspect()).sizeBytes, 2 * GiB);
    assert.deepEqual(await readAt(volume, PATTERN.length, 4096), PATTERN);
    assert.equal(project.outputs().data.id, out.data.id, "the same volume");
    if (isRoot) assert.equal(deviceSize(out.here.devicePath as string), 2 * GiB, "the attached device sees the new size");
    await backend.close();
  });

  test("3. lowering sizeGiB fails in preview naming sizeGiB and the real size; nothing changes", () => {
    size = 1;
    project.program(resources());
    const r = project.run(["preview"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /sizeGiB: 1 GiB is smaller than the volume's real size \(2 GiB\)/);
    const upAnyway = project.run(["up", "--yes", "--skip-preview"]);
    assert.notEqual(upAnyway.code, 0);
    assert.equal(cli("volume", "show", project.outputs().data.id).sizeGiB, 2);
    size = 2;
    project.program(resources());
  });

  test("4. changing snapshotId records the new source in place; the volume and its data stay", async () => {
    const before = project.outputs();
    const backend = await Backend.open(backendConfig());
    await writeAt(await backend.getVolume(before.restored.id), PATTERN, 8192);
    restoredFrom = "@snap2.snapshotId";
    project.program(resources());
    assert.equal(project.previewSteps().restored, "update");
    project.up();
    const after = project.outputs();
    assert.equal(after.restored.id, before.restored.id);
    assert.deepEqual(await readAt(await backend.getVolume(after.restored.id), PATTERN.length, 8192), PATTERN);
    assert.equal(project.stateResources().restored.outputs.snapshotId, after.snap2.id);
    assert.equal(cli("volume", "show", after.restored.id).snapshotId, after.snap.id, "the record keeps where the data came from");
    await backend.close();
  });

  test("5. extended by hand: preview --refresh --expect-no-changes fails; refresh records the real size", () => {
    const data = project.outputs().data;
    cli("volume", "extend", data.id, "--size", "3");
    const check = project.run(["preview", "--refresh", "--expect-no-changes"]);
    assert.notEqual(check.code, 0, "drift is caught");
    project.ok(["refresh", "--yes"]);
    const state = project.stateResources().data;
    assert.equal(state.outputs.sizeGiB, 3);
    assert.equal(state.inputs.sizeGiB, 3);
    size = 3;
    project.program(resources());
    // preview --json lists only resources with something to do.
    assert.ok([undefined, "same"].includes(project.previewSteps().data), "the program now says what the volume is");
  });

  test("6. deleted by hand: refresh drops it; the next up recreates it", () => {
    const copy = project.outputs().copy;
    cli("volume", "delete", copy.id);
    project.ok(["refresh", "--yes"]);
    assert.equal(project.stateResources().copy, undefined);
    project.up();
    const again = project.outputs().copy;
    assert.notEqual(again.id, copy.id);
    assert.equal(cli("volume", "show", again.id).status, "available");
    assert.equal(again.name, copy.name, "the same default name");
  });

  test("9. destroy leaves no files, loop devices or records", () => {
    const devicePath = project.outputs().here?.devicePath;
    project.ok(["destroy", "--yes"]);
    assert.deepEqual(readdirSync(pool).filter((f) => f !== ".kindling"), []);
    assert.deepEqual(cli("volume", "list"), []);
    assert.deepEqual(cli("snapshot", "list"), []);
    if (devicePath) assert.doesNotMatch(sh("losetup", ["--list", "--noheadings", "--output", "NAME,BACK-FILE"]), new RegExp(pool));
  });
});

describe("bad inputs fail in preview and create nothing", () => {
  let dir: string;
  let project: Project;
  before(() => {
    dir = tempDir();
    project = new Project({ name: "bad", driver: "file", path: join(dir, "volumes") });
    project.init();
  });
  after(() => {
    removeDir(project.dir);
    removeDir(dir);
  });

  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ["a hostile name", { sizeGiB: 1, name: "../x" }, /name: must not contain '\/'/],
    ["size 0", { sizeGiB: 0 }, /sizeGiB: must be at least 1 GiB/],
    ["an unknown extra spec", { sizeGiB: 1, extraSpecs: { colour: "red" } }, /extraSpecs\.colour: unknown extra spec/],
    ["two sources", { sizeGiB: 1, snapshotId: "a", sourceVolumeId: "b" }, /snapshotId: give at most one of snapshotId and sourceVolumeId/],
    ["an unknown property", { sizeGiB: 1, colour: "red" }, /colour: unknown property/],
  ];
  for (const [label, args, message] of cases) {
    test(label, () => {
      project.program([{ type: "Volume", name: "v", args }]);
      const r = project.run(["preview"]);
      assert.notEqual(r.code, 0);
      assert.match(r.stdout + r.stderr, message);
      const up = project.run(["up", "--yes", "--skip-preview"]);
      assert.notEqual(up.code, 0);
      assert.deepEqual(volumeFiles(join(dir, "volumes")), []);
      assert.ok(!existsSync(join(dir, "volumes", ".kindling")), "no records either");
    });
  }

  test("a bad backend names its field", () => {
    const bad = new Project({ name: "bad", driver: "file", path: join(dir, "v2"), colour: "red" });
    try {
      bad.init();
      bad.program([{ type: "Volume", name: "v", args: { sizeGiB: 1 } }]);
      const r = bad.run(["preview"]);
      assert.notEqual(r.code, 0);
      assert.match(r.stdout + r.stderr, /backend\.colour: unknown field/);
      assert.ok(!existsSync(join(dir, "v2")));
    } finally {
      removeDir(bad.dir);
    }
  });
});
