// A volume's source through the real engine: the snapshot a volume was made from deleted behind
// Pulumi's back and made again (defect D2: preview said "update", the run replaced the volumes
// and their data was gone), what preview shows when a replace-forcing input is not known yet,
// renames that change nothing downstream, and the ways to re-create a volume on purpose.
import assert from "node:assert/strict";
import { closeSync, openSync, readSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { kindling } from "./helpers/cli";
import { removeDir, tempDir, writeDevice } from "./helpers/env";
import { Project, type Resource } from "./helpers/pulumi";

const USER_DATA = Buffer.from("USER DATA IN v0");
/** Written into base after the first snapshot, so only a copy of a later snapshot holds it. */
const BASE_LATER = Buffer.from("BASE AFTER THE FIRST SNAPSHOT");
const LATER_AT = 4096;

function readFile(path: string, length: number, offset = 0): Buffer {
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, offset);
    return buf;
  } finally {
    closeSync(fd);
  }
}

type Counts = Record<string, number>;

describe("a volume's source snapshot, deleted behind Pulumi's back (D2)", () => {
  let dir: string;
  let config: string;
  let project: Project;
  const cli = (...args: string[]) => {
    const r = kindling(["--config", config, "--json", ...args]);
    assert.equal(r.code, 0, r.stderr);
    return r.json();
  };
  /** What `pulumi preview --json` plans, as counts per operation. */
  const previewSummary = (extra: string[]): Counts => JSON.parse(project.ok(["preview", "--json", ...extra]).stdout).changeSummary;
  /** What the last `up` did, as the stack's history counts it. */
  const lastRun = (): Counts => JSON.parse(project.ok(["stack", "history", "--json"]).stdout)[0].resourceChanges;
  const urn = (name: string) => (project.stateResources()[name] as unknown as { urn: string }).urn;

  // The program of D2: a base volume, a snapshot of it, and two volumes made from the snapshot.
  const d2: Resource[] = [
    { type: "Volume", name: "base", args: { sizeGiB: 1 } },
    { type: "Snapshot", name: "snap", args: { volumeId: "@base.volumeId" } },
    { type: "Volume", name: "v0", args: { sizeGiB: 1, snapshotId: "@snap.snapshotId" } },
    { type: "Volume", name: "v1", args: { sizeGiB: 1, snapshotId: "@snap.snapshotId" } },
  ];

  before(() => {
    dir = tempDir();
    const pool = join(dir, "volumes");
    config = join(dir, "kindling.json");
    writeFileSync(config, JSON.stringify({ backends: { sources: { driver: "file", path: pool } } }));
    project = new Project({ name: "sources", driver: "file", path: pool });
    project.init();
  });
  after(() => {
    if (project) {
      project.run(["destroy", "--yes"]);
      removeDir(project.dir);
    }
    removeDir(dir);
  });

  test("D2: preview and run agree, and the volumes keep their ids and the user's data", () => {
    project.program(d2);
    project.up();
    const before = project.outputs();
    writeDevice(before.v0.location as string, USER_DATA, 0);
    writeDevice(before.base.location as string, BASE_LATER, LATER_AT);
    cli("snapshot", "delete", before.snap.id);

    const steps = project.previewSteps(["--refresh"]);
    assert.equal(steps.snap, "create", "the snapshot is made again");
    assert.equal(steps.v0, "update");
    assert.equal(steps.v1, "update");
    const planned = previewSummary(["--refresh"]);
    project.ok(["up", "--refresh", "--yes"]);
    const done = lastRun();
    assert.deepEqual(done, planned, "the run did what the preview showed");
    assert.equal(done.replace, undefined, JSON.stringify(done));
    assert.equal(done.delete, undefined, JSON.stringify(done));

    const after = project.outputs();
    assert.notEqual(after.snap.id, before.snap.id);
    for (const name of ["base", "v0", "v1"]) assert.equal(after[name].id, before[name].id, `${name} is the same volume`);
    assert.deepEqual(readFile(after.v0.location as string, USER_DATA.length), USER_DATA, "the user's data is still there");
    for (const name of ["v0", "v1"]) {
      assert.notDeepEqual(readFile(after[name].location as string, BASE_LATER.length, LATER_AT), BASE_LATER, `${name}'s data was not touched`);
      assert.equal(project.stateResources()[name].outputs.snapshotId, after.snap.id, "the new input is recorded");
      assert.equal(cli("volume", "show", after[name].id).snapshotId, before.snap.id, "the record still says where the data came from");
    }
    const again = project.run(["preview", "--expect-no-changes"]);
    assert.equal(again.code, 0, again.stdout + again.stderr);
  });

  test("`pulumi up --replace` re-creates a volume from the snapshot it names now", () => {
    const before = project.outputs();
    const planned = project.previewSteps(["--replace", urn("v1")]);
    assert.equal(planned.v1, "replace");
    project.ok(["up", "--yes", "--replace", urn("v1")]);
    const after = project.outputs();
    assert.notEqual(after.v1.id, before.v1.id, "a new volume");
    assert.deepEqual(readFile(after.v1.location as string, BASE_LATER.length, LATER_AT), BASE_LATER, "copied from the current snapshot");
    assert.equal(cli("volume", "show", after.v1.id).snapshotId, after.snap.id);
    assert.equal(after.v0.id, before.v0.id, "the other volume is left alone");
    assert.equal(kindling(["--config", config, "volume", "show", before.v1.id]).code, 3, "the old one is gone");
  });

  test("ignoreChanges hides a new source; replacementTrigger re-creates on it", () => {
    const program = (): Resource[] => [
      ...d2,
      { type: "Volume", name: "kept", args: { sizeGiB: 1, snapshotId: "@snap.snapshotId" }, opts: { ignoreChanges: ["snapshotId"] } },
      { type: "Volume", name: "follows", args: { sizeGiB: 1, snapshotId: "@snap.snapshotId" }, opts: { replacementTrigger: "@snap.snapshotId" } },
    ];
    project.program(program());
    project.up();
    const before = project.outputs();
    cli("snapshot", "delete", before.snap.id);

    const steps = project.previewSteps(["--refresh"]);
    assert.equal(steps.kept, undefined, `no step at all for the ignored change: ${JSON.stringify(steps)}`);
    assert.equal(steps.follows, "replace");
    assert.equal(steps.v0, "update");
    const planned = previewSummary(["--refresh"]);
    project.ok(["up", "--refresh", "--yes"]);
    assert.deepEqual(lastRun(), planned);

    const after = project.outputs();
    assert.equal(after.kept.id, before.kept.id);
    assert.equal(project.stateResources().kept.outputs.snapshotId, before.snap.id, "the ignored input keeps its old value");
    assert.notEqual(after.follows.id, before.follows.id);
    assert.equal(cli("volume", "show", after.follows.id).snapshotId, after.snap.id);
    assert.equal(after.follows.name, before.follows.name, "made again under its name (the old one went first)");
    assert.equal(after.v0.id, before.v0.id);
    project.program(d2);
    project.up();
  });

  test("renaming base: preview shows only base as updated, and that is what the run does", () => {
    const before = project.outputs();
    project.program([{ ...d2[0], args: { sizeGiB: 1, name: "base-renamed" } }, ...d2.slice(1)]);
    const steps = project.previewSteps();
    assert.deepEqual(
      Object.entries(steps).filter(([, op]) => op !== "same"),
      [["base", "update"]],
      `dependents are not shown as changed: ${JSON.stringify(steps)}`,
    );
    const planned = previewSummary([]);
    project.up();
    assert.deepEqual(lastRun(), planned);
    assert.equal(lastRun().update, 1);
    const after = project.outputs();
    assert.equal(after.base.name, "base-renamed");
    for (const name of ["base", "snap", "v0", "v1"]) assert.equal(after[name].id, before[name].id);
    // A second rename, now with the values carried in the state's inputs.
    project.program([{ ...d2[0], args: { sizeGiB: 1, name: "base-again" } }, ...d2.slice(1)]);
    assert.deepEqual(Object.entries(project.previewSteps()).filter(([, op]) => op !== "same"), [["base", "update"]]);
    project.up();
  });

  test("an input that forces a replacement and is unknown in preview shows as a replacement", () => {
    // Replacing base makes its volumeId unknown in preview; the snapshot of it will be replaced
    // in the run, so the preview must say so, not "update".
    const before = project.outputs();
    const steps = project.previewSteps(["--replace", urn("base")]);
    assert.equal(steps.base, "replace");
    assert.equal(steps.snap, "replace", JSON.stringify(steps));
    const planned = previewSummary(["--replace", urn("base")]);
    project.ok(["up", "--yes", "--replace", urn("base")]);
    assert.deepEqual(lastRun(), planned);
    const after = project.outputs();
    assert.notEqual(after.base.id, before.base.id);
    assert.notEqual(after.snap.id, before.snap.id);
    assert.equal(cli("snapshot", "show", after.snap.id).volumeId, after.base.id);
    for (const name of ["v0", "v1"]) assert.equal(after[name].id, before[name].id, `${name} keeps its data`);
  });
});
