// A Volume or Snapshot replaced under the same name while the old one still exists (the
// resource option `deleteBeforeReplace: false`), through the real engine. The create took the
// object the owner key names as what an interrupted create had left, which here is the old
// resource's own: it handed the old volume back as the new one, the engine then deleted the old
// resource, that same volume, and the state named a deleted volume; the data was gone. Now
// `pulumi up --replace` (which tells the provider nothing of the old resource) keeps the volume
// and its data in the new resource, and a `replacementTrigger` change is refused, naming the
// option that works, with nothing deleted. The same gap through `adopt`, and the provider calls
// as the engine makes them when it does tell (diff with the state's id).
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { Backend } from "../provider/library";
import * as provider from "../provider/pulumi";
import { readAt } from "./helpers/backends";
import { kindling } from "./helpers/cli";
import { readRange, removeDir, tempDir, writeDevice } from "./helpers/env";
import { fileProject, type Resource } from "./helpers/pulumi";

const DATA = Buffer.from("THE USER'S DATA, WRITTEN BEFORE THE REPLACEMENT");
const MADE_FIRST = { deleteBeforeReplace: false };

/** A project on a file backend of its own, with the library and the command on the same backend. */
async function setup(name: string) {
  const { dir, pool, config, project } = fileProject(name);
  const backend = await Backend.open({ name, driver: "file", path: pool });
  const list = (kind: "volume" | "snapshot") => {
    const r = kindling(["--config", config, "--json", kind, "list"]);
    assert.equal(r.code, 0, r.stderr);
    return (r.json() as Array<{ id: string; name: string }>).map((o) => o.id).sort();
  };
  const files = () => (existsSync(pool) ? readdirSync(pool).filter((f) => f.startsWith("volume-")).sort() : []);
  const urn = (resource: string) => (project.stateResources()[resource] as unknown as { urn: string }).urn;
  const cleanup = async () => {
    project.run(["destroy", "--yes"]);
    await backend.close();
    removeDir(project.dir);
    removeDir(dir);
  };
  return { project, backend, list, files, urn, cleanup };
}

/** The hint the refusal gives, as a resource option to set: `deleteBeforeReplace: true`. */
function namedOption(output: string): Record<string, unknown> {
  const named = /`(deleteBeforeReplace): (true)`/.exec(output);
  assert.ok(named, `the refusal names the resource option that works:\n${output}`);
  return { [named[1]]: JSON.parse(named[2]) };
}

describe("a create meeting the object the state still holds for its resource, through the engine", () => {
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => {
    for (const c of cleanups) await c();
  });

  test("Volume, `pulumi up --replace`: the volume the state names exists and its data is intact", async () => {
    const s = await setup("vol-replace");
    cleanups.push(s.cleanup);
    s.project.program([{ type: "Volume", name: "data", args: { sizeGiB: 1 }, opts: MADE_FIRST }]);
    s.project.up();
    const before = s.project.stateResources().data;
    writeDevice(before.outputs.location as string, DATA);

    const r = s.project.run(["up", "--yes", "--skip-preview", "--replace", s.urn("data")]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const after = s.project.stateResources().data;
    assert.ok(after, "the Volume is in the state");
    const volume = await s.backend.getVolume(after.id); // throws when the state names a deleted volume
    assert.deepEqual(await readAt(volume, DATA.length), DATA, "its data is intact");
    assert.deepEqual(readRange(after.outputs.location as string, DATA.length), DATA);
    // The provider cannot tell this create from one after a crash: it keeps the volume.
    assert.equal(after.id, before.id, "the new resource holds the same volume");
    assert.deepEqual(s.list("volume"), [after.id], "one volume, the one in the state");
    assert.deepEqual(s.files(), [`volume-${after.id}`], "no file left beside it");
    const again = s.project.run(["preview", "--expect-no-changes"]);
    assert.equal(again.code, 0, `state and storage agree:\n${again.stdout}\n${again.stderr}`);
  });

  test("Volume, a `replacementTrigger` change: refused naming the option, nothing deleted; with it, a new volume", async () => {
    const s = await setup("vol-trigger");
    cleanups.push(s.cleanup);
    const data = (opts: Record<string, unknown>): Resource[] => [{ type: "Volume", name: "data", args: { sizeGiB: 1 }, opts }];
    s.project.program(data({ ...MADE_FIRST, replacementTrigger: "one" }));
    s.project.up();
    const before = s.project.stateResources().data;
    writeDevice(before.outputs.location as string, DATA);

    s.project.program(data({ ...MADE_FIRST, replacementTrigger: "two" }));
    const refused = s.project.run(["up", "--yes", "--skip-preview"]);
    const output = refused.stdout + refused.stderr;
    assert.notEqual(refused.code, 0, `the replacement is refused:\n${output}`);
    assert.match(output, new RegExp(`the volume named "${before.outputs.name}" belongs to the Volume this one replaces`));
    const after = s.project.stateResources().data;
    assert.equal(after.id, before.id, "the state still names the old volume");
    assert.deepEqual(await readAt(await s.backend.getVolume(after.id), DATA.length), DATA, "which exists, its data intact");
    assert.deepEqual(s.list("volume"), [before.id], "and nothing was made beside it");

    // What the refusal names works: the old volume goes first, a new one is made under the name.
    s.project.program(data({ ...namedOption(output), replacementTrigger: "two" }));
    s.project.up();
    const replaced = s.project.stateResources().data;
    assert.notEqual(replaced.id, before.id, "a new volume");
    assert.equal(replaced.outputs.name, before.outputs.name);
    assert.deepEqual(s.list("volume"), [replaced.id]);
    assert.deepEqual(s.files(), [`volume-${replaced.id}`]);
  });

  test("a volume another resource adopts in the deployment that deletes its old resource keeps its data", async () => {
    // The same gap through `adopt`: the create takes up an existing volume, and the delete of
    // the resource that held it, later in the same deployment, deleted it.
    const s = await setup("vol-moved");
    cleanups.push(s.cleanup);
    s.project.program([{ type: "Volume", name: "old", args: { sizeGiB: 1, name: "kept" } }]);
    s.project.up();
    const before = s.project.stateResources().old;
    writeDevice(before.outputs.location as string, DATA);

    s.project.program([{ type: "Volume", name: "new", args: { sizeGiB: 1, name: "kept", adopt: "kept" } }]);
    s.project.up();
    const state = s.project.stateResources();
    assert.equal(state.old, undefined, "the old resource left the state");
    assert.equal(state.new.id, before.id, "the new one holds the volume");
    assert.deepEqual(await readAt(await s.backend.getVolume(state.new.id), DATA.length), DATA, "which exists, its data intact");
    const owners = (await s.backend.persistence.getKeyValues()).filter((kv) => kv.key.startsWith("pulumi/volume/"));
    assert.deepEqual(owners.map((kv) => [kv.key.split("/").pop(), kv.value]), [["new", before.id]], "only the new resource's owner record is left");
  });

  /** A base volume holding DATA, and a snapshot of it made with `opts`. */
  async function snapshotted(s: Awaited<ReturnType<typeof setup>>, opts: Record<string, unknown>) {
    const base: Resource = { type: "Volume", name: "base", args: { sizeGiB: 1 } };
    s.project.program([base]);
    s.project.up();
    writeDevice(s.project.stateResources().base.outputs.location as string, DATA);
    const program = (o: Record<string, unknown>): Resource[] => [base, { type: "Snapshot", name: "snap", args: { volumeId: "@base.volumeId" }, opts: o }];
    s.project.program(program(opts));
    s.project.up();
    // Overwritten after the snapshot: only the snapshot still holds DATA.
    writeDevice(s.project.stateResources().base.outputs.location as string, Buffer.alloc(DATA.length, 0x55));
    return { program, before: s.project.stateResources().snap };
  }

  const snapshotData = async (s: Awaited<ReturnType<typeof setup>>, id: string) => readAt(await s.backend.getSnapshot(id), DATA.length);

  test("Snapshot, `pulumi up --replace`: the snapshot the state names exists and holds the data", async () => {
    const s = await setup("snap-replace");
    cleanups.push(s.cleanup);
    const { before } = await snapshotted(s, MADE_FIRST);
    assert.deepEqual(await snapshotData(s, before.id), DATA);

    const r = s.project.run(["up", "--yes", "--skip-preview", "--replace", s.urn("snap")]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const after = s.project.stateResources().snap;
    assert.ok(after, "the Snapshot is in the state");
    assert.deepEqual(await snapshotData(s, after.id), DATA, "it exists and holds the data"); // throws when deleted
    assert.equal(after.id, before.id, "the new resource holds the same snapshot");
    assert.deepEqual(s.list("snapshot"), [after.id], "one snapshot, the one in the state");
    const again = s.project.run(["preview", "--expect-no-changes"]);
    assert.equal(again.code, 0, `state and storage agree:\n${again.stdout}\n${again.stderr}`);
  });

  test("Snapshot, a `replacementTrigger` change: refused naming the option, nothing deleted; with it, a new snapshot", async () => {
    const s = await setup("snap-trigger");
    cleanups.push(s.cleanup);
    const { program, before } = await snapshotted(s, { ...MADE_FIRST, replacementTrigger: "one" });

    s.project.program(program({ ...MADE_FIRST, replacementTrigger: "two" }));
    const refused = s.project.run(["up", "--yes", "--skip-preview"]);
    const output = refused.stdout + refused.stderr;
    assert.notEqual(refused.code, 0, `the replacement is refused:\n${output}`);
    assert.match(output, new RegExp(`the snapshot named "${before.outputs.name}" belongs to the Snapshot this one replaces`));
    const after = s.project.stateResources().snap;
    assert.equal(after.id, before.id, "the state still names the old snapshot");
    assert.deepEqual(await snapshotData(s, after.id), DATA, "which exists and holds the data");
    assert.deepEqual(s.list("snapshot"), [before.id], "and nothing was made beside it");

    s.project.program(program({ ...namedOption(output), replacementTrigger: "two" }));
    s.project.up();
    const replaced = s.project.stateResources().snap;
    assert.notEqual(replaced.id, before.id, "a new snapshot");
    assert.deepEqual(s.list("snapshot"), [replaced.id]);
  });
});

describe("a Volume create when diff told the state's id (provider calls as the engine makes them)", () => {
  const dir = tempDir();
  const local = { name: "told", driver: "file", path: join(dir, "volumes") };
  let backend: Backend;
  after(async () => {
    await backend?.close();
    removeDir(dir);
  });
  const news = (ownerKey: string) => ({ backend: local, sizeGiB: 1, resourceName: "v", ownerKey });
  const check = async (olds: Record<string, unknown>, ownerKey: string) => (await provider.volume.check(olds, news(ownerKey))).inputs as never;

  test("the volume the state holds is never taken up, another leftover of the resource is", async () => {
    backend = await Backend.open(local);
    const ownerKey = "p/s/told";
    const old = await provider.volume.create(await check({}, ownerKey));
    const oldInputs = await check({}, ownerKey);

    // A replacement made first that diff asked for (a new pool, say, with deleteBeforeReplace:
    // false): check with the old inputs, diff with the id, the create checked again without them.
    await provider.volume.diff(old.id, old.outs, await check(oldInputs, ownerKey));
    await assert.rejects(provider.volume.create(await check({}, ownerKey)), /belongs to the Volume this one replaces.*`deleteBeforeReplace: true`/);
    assert.equal((await backend.getVolume(old.id)).status, "available", "the old volume is untouched");
    assert.deepEqual((await backend.persistence.getKeyValues(`pulumi/volume/${ownerKey}`)).map((kv) => kv.value), [old.id]);

    // Delete-first instead, and the up killed once the new volume is made: the next deployment
    // still holds the old resource (pending replacement), and diff names the old id. The
    // volume the killed create made is then taken up, not made twice.
    await provider.volume.remove(old.id, old.outs);
    const lost = await provider.volume.create(await check({}, ownerKey));
    await provider.volume.diff(old.id, old.outs, await check(oldInputs, ownerKey));
    const again = await provider.volume.create(await check({}, ownerKey));
    assert.equal(again.id, lost.id);
    assert.deepEqual((await backend.persistence.getVolumes({})).map((v) => v.id), [lost.id]);
    await provider.volume.remove(again.id, again.outs);
  });
});
