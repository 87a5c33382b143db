// `kill -9` of `pulumi up` (the engine and all its plugins) while an Attachment with
// attachLocally is being made, then `up` and `destroy` again (defect D8, the Pulumi form: the
// next `up` made a second connection, and the attach was refused, or an orphan connection was
// left that made `pulumi destroy` fail). Also: a replacement made before the old attachment
// is deleted never takes the old one's connection, and the commands errors name work.
import assert from "node:assert/strict";
import { type ChildProcess } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Backend, type Connection } from "../provider/library";
import * as provider from "../provider/pulumi";
import { kindling } from "./helpers/cli";
import { detachLoopsUnder, loopDevices, recordsVersusStorage } from "./helpers/consistency";
import { needsRoot, removeDir, tempDir } from "./helpers/env";
import { fileProject, Project, type Resource } from "./helpers/pulumi";
import { processes, stillRunning, type Proc } from "./helpers/processes";
import { slowLosetup } from "./helpers/slow-losetup";

/** The processes of one engine run: its process group, and anything it started outside it. */
function runProcesses(leader: number): Proc[] {
  const all = processes();
  const found = new Map<number, Proc>();
  for (const p of all) if (p.pgid === leader || p.pid === leader) found.set(p.pid, p);
  const queue = [leader];
  while (queue.length) {
    const parent = queue.shift() as number;
    for (const p of all.filter((x) => x.ppid === parent && !found.has(x.pid))) found.set(p.pid, p);
    for (const p of all.filter((x) => x.ppid === parent)) queue.push(p.pid);
  }
  return [...found.values()];
}

async function until(check: () => boolean | Promise<boolean>, tries: number, everyMs: number): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    if (await check()) return true;
    await sleep(everyMs);
  }
  return check();
}

/** Every process the engine run left over, by pid (cleanup after a failed assertion). */
const leftovers: Proc[] = [];

/**
 * kill -9 of the engine's whole process group (the engine, the language host, the program, the
 * dynamic-provider process, a losetup in flight), and of any process of the run outside the
 * group; returns once every one of them has ended.
 */
async function killRun(engine: ChildProcess): Promise<void> {
  const leader = engine.pid as number;
  const members = runProcesses(leader);
  leftovers.push(...members);
  const exited = engine.exitCode !== null || engine.signalCode !== null ? Promise.resolve() : new Promise((done) => engine.once("exit", done));
  process.kill(-leader, "SIGKILL");
  for (const p of stillRunning(members)) if (p.pgid !== leader) process.kill(p.pid, "SIGKILL");
  await exited;
  const gone = await until(() => stillRunning([...members, ...runProcesses(leader)]).length === 0, 200, 50);
  assert.ok(gone, `still running after kill -9:\n${stillRunning(members).map((p) => `${p.pid} ${p.cmdline}`).join("\n")}`);
  assert.ok(members.some((p) => /dynamic-provider/.test(p.cmdline)), `the dynamic-provider process was among them:\n${members.map((p) => p.cmdline).join("\n")}`);
}

function loopsOver(file: string): string[] {
  return [...loopDevices()].filter(([, back]) => back.replace(/ \(deleted\)$/, "") === file).map(([device]) => device);
}

/** Whether the local state backend holds a lock on a stack (left by an engine killed mid-update). */
function locked(project: Project): boolean {
  const locks = join(project.state, ".pulumi", "locks");
  const any = (dir: string): boolean => readdirSync(dir, { withFileTypes: true }).some((e) => (e.isDirectory() ? any(join(dir, e.name)) : e.name.endsWith(".json")));
  return existsSync(locks) && any(locks);
}


/** A project with a file backend and one volume made, plus the CLI and library on the same backend. */
async function setup(name: string) {
  const { dir, pool, config, project } = fileProject(name);
  const volume: Resource = { type: "Volume", name: "shared", args: { sizeGiB: 1 } };
  project.program([volume]);
  project.up();
  const out = project.outputs().shared;
  const backend = await Backend.open({ name, driver: "file", path: pool });
  const cleanup = async () => {
    project.run(["cancel", "--yes"]);
    project.run(["destroy", "--yes"]);
    await backend.close();
    detachLoopsUnder(dir);
    removeDir(project.dir);
    removeDir(dir);
  };
  const cli = (args: string[]) => kindling(["--config", config, ...args]);
  return { dir, pool, project, backend, volume, volumeId: out.id, volumeName: out.name, file: out.location as string, cleanup, cli };
}

const attachment = (args: Record<string, unknown> = {}, opts?: Record<string, unknown>): Resource => ({
  type: "Attachment", name: "here", args: { volumeId: "@shared.volumeId", protocol: "local", attachLocally: true, ...args }, ...(opts ? { opts } : {}),
});

describe("kill -9 of `pulumi up` while an Attachment attaches locally (defect D8, the Pulumi form)", () => {
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => {
    for (const p of stillRunning(leftovers)) process.kill(p.pid, "SIGKILL");
    for (const c of cleanups) await c();
  });

  for (const when of ["while losetup runs", "after the device is recorded, before the engine saves it"] as const) {
    test(`killed ${when}: the next up makes exactly one connection and device, the one in the state; destroy leaves nothing`, async (t) => {
      if (needsRoot(t)) return;
      const s = await setup(when.startsWith("while") ? "mid-losetup" : "unsaved");
      cleanups.push(s.cleanup);
      s.project.program([s.volume, attachment()]);
      const engine = s.project.start(["up", "--yes", "--skip-preview"], { env: { PATH: `${slowLosetup(s.dir)}:${s.project.env.PATH}` }, group: true });
      const made = await until(() => loopsOver(s.file).length > 0, 1200, 25);
      assert.ok(made, "losetup made a device over the volume's file");
      let unsaved: Connection | undefined;
      if (when.startsWith("while")) {
        await killRun(engine);
        const [pending] = await s.backend.connections(s.volumeId);
        assert.ok(pending, "the connection was recorded before the device was made");
        assert.equal(pending.devicePath, undefined, "the kill came before the device was recorded");
      } else {
        // The engine stops answering, but the provider finishes the attach: its answer is never
        // read, so the state never gets the Attachment that the records now hold.
        process.kill(engine.pid as number, "SIGSTOP");
        const recorded = await until(async () => (await s.backend.connections(s.volumeId)).some((c) => c.devicePath !== undefined), 400, 25);
        await killRun(engine);
        assert.ok(recorded, "the connection recorded its device before the kill");
        [unsaved] = await s.backend.connections(s.volumeId);
      }
      assert.equal(loopsOver(s.file).length, 1, "the kill left one device behind");

      if (locked(s.project)) s.project.ok(["cancel", "--yes"]);
      assert.equal(locked(s.project), false);
      assert.equal(s.project.stateResources().here, undefined, "the state has no Attachment from the killed run");
      const again = s.project.run(["up", "--yes", "--skip-preview"]);
      assert.equal(again.code, 0, `the next up succeeds:\n${again.stdout}\n${again.stderr}`);

      const here = s.project.stateResources().here;
      assert.ok(here, "the Attachment is in the state");
      const connections = await s.backend.connections(s.volumeId);
      assert.deepEqual(connections.map((c) => c.id), [here.id], "exactly one connection, the one in the state");
      const device = connections[0].devicePath as string;
      assert.match(device, /^\/dev\/loop\d+$/);
      assert.equal(here.outputs.devicePath, device);
      assert.deepEqual(loopsOver(s.file), [device], "exactly one device over the volume's file, the recorded one");
      // A connection whose attach was cut short is rolled back; a whole one is taken up.
      if (unsaved) assert.deepEqual([here.id, device], [unsaved.id, unsaved.devicePath], "the connection the killed run made was taken up");
      assert.deepEqual(await recordsVersusStorage(s.backend, s.pool), []);

      const destroyed = s.project.run(["destroy", "--yes"]);
      assert.equal(destroyed.code, 0, `destroy succeeds:\n${destroyed.stdout}\n${destroyed.stderr}`);
      assert.deepEqual(loopsOver(s.file), [], "no device over the file");
      assert.deepEqual(await s.backend.persistence.getConnections({}), []);
      assert.deepEqual(await s.backend.persistence.getVolumes({}), []);
      assert.deepEqual((await s.backend.persistence.getKeyValues()).filter((kv) => kv.key.startsWith("pulumi/")), [], "no ownership records left");
    });
  }
});

describe("Attachment create after an interrupted run, and beside the attachment it replaces", () => {
  const dir = tempDir();
  const local = { name: "owned", driver: "file", path: join(dir, "volumes") };
  let backend: Backend;
  let volumeId: string;
  after(async () => {
    await backend?.close();
    removeDir(dir);
  });

  const news = (ownerKey: string, extra: Record<string, unknown> = {}) => ({ backend: local, volumeId, protocol: "local", resourceName: "here", ownerKey, ...extra });
  /** A create as the engine asks for one: check (with the old inputs, if the state has it), then create. */
  const create = async (olds: Record<string, unknown>, inputs: Record<string, unknown>) => provider.attachment.create((await provider.attachment.check(olds, inputs)).inputs as never);
  const connectionIds = async () => (await backend.connections(volumeId)).map((c) => c.id).sort();
  const owners = async (ownerKey: string) => backend.persistence.getKeyValues(`pulumi/attachment/${ownerKey}`);

  test("a create whose answer never reached the engine is taken up by the next create of the resource", async () => {
    backend = await Backend.open(local);
    volumeId = (await backend.createVolume({ name: "shared", sizeGiB: 1 })).id;
    const lost = await create({}, news("p/s/lost"));
    const again = await create({}, news("p/s/lost"));
    assert.equal(again.id, lost.id, "the same connection, not a second one");
    assert.deepEqual(await connectionIds(), [lost.id]);
    assert.deepEqual((await owners("p/s/lost")).map((kv) => kv.value), [lost.id]);
  });

  test("a leftover made for other inputs is disconnected, not left beside the new connection", async () => {
    const lost = await create({}, news("p/s/changed"));
    const made = await create({}, news("p/s/changed", { mode: "ro" }));
    assert.notEqual(made.id, lost.id);
    assert.ok(!(await connectionIds()).includes(lost.id));
    assert.equal((await backend.connections(volumeId)).find((c) => c.id === made.id)?.attachMode, "ro");
    await provider.attachment.remove(made.id, made.outs);
    assert.ok(!(await connectionIds()).includes(made.id));
    assert.deepEqual(await owners("p/s/changed"), [], "delete forgets the owner");
  });

  test("a replacement made before the old attachment is deleted never takes the old one's connection", async () => {
    const before = await connectionIds();
    const old = await create({}, news("p/s/replaced"));
    const oldInputs = (await provider.attachment.check({}, news("p/s/replaced"))).inputs as Record<string, unknown>;
    // Forced by the engine through another resource (replaceWith, deletedWith) with
    // deleteBeforeReplace false: check sees the old inputs, diff is skipped, the inputs are the same.
    const forced = await create(oldInputs, news("p/s/replaced"));
    assert.notEqual(forced.id, old.id);
    assert.deepEqual(await connectionIds(), [...before, old.id, forced.id].sort(), "the old connection stays until the engine deletes it");
    await provider.attachment.remove(old.id, old.outs);
    assert.deepEqual(await connectionIds(), [...before, forced.id].sort());

    // Asked for by diff (a new mode, deleteBeforeReplace false): the replacement is checked again without old inputs.
    const forcedInputs = (await provider.attachment.check({}, news("p/s/replaced"))).inputs as Record<string, unknown>;
    await provider.attachment.check(forcedInputs, news("p/s/replaced", { mode: "ro" }));
    const d = await provider.attachment.diff(forced.id, forced.outs, news("p/s/replaced", { mode: "ro" }) as never);
    assert.deepEqual(d.replaces, ["mode"]);
    const ro = await create({}, news("p/s/replaced", { mode: "ro" }));
    assert.notEqual(ro.id, forced.id);
    assert.deepEqual(await connectionIds(), [...before, forced.id, ro.id].sort());
    await provider.attachment.remove(forced.id, forced.outs);
    assert.deepEqual(await connectionIds(), [...before, ro.id].sort());
    assert.deepEqual((await owners("p/s/replaced")).map((kv) => kv.value), [ro.id], "the owner names the connection the state now holds");
    await provider.attachment.remove(ro.id, ro.outs);
    assert.deepEqual(await owners("p/s/replaced"), []);
  });

  test("an update of an attachment disconnected outside Pulumi names what to run, and that works", async () => {
    const made = await create({}, news("p/s/gone"));
    await (await backend.connections(volumeId)).find((c) => c.id === made.id)?.disconnect();
    const newBackend = { ...local, copyMode: "copy" }; // a setting that changes in place
    await assert.rejects(provider.attachment.update(made.id, made.outs, news("p/s/gone", { backend: newBackend }) as never), /`pulumi refresh` drops it from the state, and the next `pulumi up` connects again/);
    assert.deepEqual(await provider.attachment.read(made.id, made.outs), {}, "refresh drops it (no id)");
    const again = await create({}, news("p/s/gone", { backend: newBackend }));
    assert.ok((await connectionIds()).includes(again.id), "and the next up connects again");
    await provider.attachment.remove(again.id, again.outs);
  });

  test("`pulumi up --replace` made first looks like a create after a crash: the old resource's delete leaves the connection", async () => {
    // The engine tells the provider nothing of this replacement: check has no old inputs and
    // diff is not called, so the create takes up the old connection; the delete of the old
    // resource in the same deployment must not end it (a later destroy does).
    const before = await connectionIds();
    const old = await create({}, news("p/s/targeted"));
    const forced = await create({}, news("p/s/targeted"));
    assert.equal(forced.id, old.id);
    await provider.attachment.remove(old.id, old.outs);
    assert.deepEqual(await connectionIds(), [...before, forced.id].sort(), "the connection the new resource holds stays");
    assert.deepEqual((await owners("p/s/targeted")).map((kv) => kv.value), [forced.id]);
    await provider.attachment.remove(forced.id, forced.outs);
    assert.deepEqual(await connectionIds(), before, "a later delete ends it");
    assert.deepEqual(await owners("p/s/targeted"), []);
  });
});

describe("Attachments through the engine: replacements, and commands that errors name", () => {
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => {
    for (const p of stillRunning(leftovers)) process.kill(p.pid, "SIGKILL");
    for (const c of cleanups) await c();
  });

  const urn = (project: Project) => (project.stateResources().here as unknown as { urn: string }).urn;

  test("`pulumi up --replace` makes a new connection and device; the old ones go", async (t) => {
    if (needsRoot(t)) return;
    const s = await setup("replaced");
    cleanups.push(s.cleanup);
    s.project.program([s.volume, attachment()]);
    s.project.up();
    const first = s.project.stateResources().here;
    s.project.up(["--replace", urn(s.project)]);
    const here = s.project.stateResources().here;
    assert.notEqual(here.id, first.id, "a new connection");
    const connections = await s.backend.connections(s.volumeId);
    assert.deepEqual(connections.map((c) => c.id), [here.id], "the one in the state, and no other");
    assert.deepEqual(loopsOver(s.file), [here.outputs.devicePath]);
    assert.deepEqual(await recordsVersusStorage(s.backend, s.pool), []);
  });

  test("a replacement made first (deleteBeforeReplace: false) gets a connection of its own; the old one goes", async () => {
    const s = await setup("made-first");
    cleanups.push(s.cleanup);
    const opts = (trigger: string) => ({ deleteBeforeReplace: false, replacementTrigger: trigger });
    s.project.program([s.volume, attachment({ attachLocally: false }, opts("one"))]);
    s.project.up();
    const first = s.project.stateResources().here.id;
    const ids = async () => (await s.backend.connections(s.volumeId)).map((c) => c.id);
    // The same inputs, a new trigger: only the old inputs, seen by check, tell the two apart.
    s.project.program([s.volume, attachment({ attachLocally: false }, opts("two"))]);
    s.project.up();
    const triggered = s.project.stateResources().here.id;
    assert.notEqual(triggered, first, "a new connection, not the old one handed back");
    assert.deepEqual(await ids(), [triggered], "the one in the state, and no other");
    s.project.program([s.volume, attachment({ attachLocally: false, mode: "ro" }, opts("two"))]);
    s.project.up();
    const ro = s.project.stateResources().here.id;
    assert.notEqual(ro, triggered);
    assert.deepEqual((await s.backend.connections(s.volumeId)).map((c) => [c.id, c.attachMode]), [[ro, "ro"]]);
    // `up --replace` tells the provider nothing (no old inputs, no diff): whatever it makes, the
    // state and the records still agree.
    s.project.up(["--replace", urn(s.project)]);
    assert.deepEqual(await ids(), [s.project.stateResources().here.id]);
    s.project.ok(["destroy", "--yes"]);
    assert.deepEqual(await s.backend.persistence.getConnections({}), []);
    assert.deepEqual((await s.backend.persistence.getKeyValues()).filter((kv) => kv.key.startsWith("pulumi/")), []);
  });

  test("attached locally, a replacement made first is refused naming the option that makes it work", async (t) => {
    if (needsRoot(t)) return;
    const s = await setup("attached-first");
    cleanups.push(s.cleanup);
    s.project.program([s.volume, attachment({}, { deleteBeforeReplace: false, replacementTrigger: "one" })]);
    s.project.up();
    const first = s.project.stateResources().here;
    s.project.program([s.volume, attachment({}, { deleteBeforeReplace: false, replacementTrigger: "two" })]);
    const refused = s.project.run(["up", "--yes", "--skip-preview"]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stdout + refused.stderr, /by the Attachment this one replaces/);
    const named = /`(deleteBeforeReplace): (true)`/.exec(refused.stdout + refused.stderr);
    assert.ok(named, refused.stdout + refused.stderr);
    assert.deepEqual((await s.backend.connections(s.volumeId)).map((c) => c.id), [first.id], "the old attachment is untouched");
    assert.deepEqual(loopsOver(s.file), [first.outputs.devicePath]);
    s.project.program([s.volume, attachment({}, { [named[1]]: JSON.parse(named[2]), replacementTrigger: "two" })]);
    s.project.up();
    const here = s.project.stateResources().here;
    assert.notEqual(here.id, first.id);
    const connections = await s.backend.connections(s.volumeId);
    assert.deepEqual(connections.map((c) => c.id), [here.id]);
    assert.deepEqual(loopsOver(s.file), [connections[0].devicePath]);
    assert.deepEqual(await recordsVersusStorage(s.backend, s.pool), []);
  });

  test("an attach refused because another connection holds the device names a command that releases it", async (t) => {
    if (needsRoot(t)) return;
    const s = await setup("held");
    cleanups.push(s.cleanup);
    const attached = s.cli(["attach", s.volumeName]);
    assert.equal(attached.code, 0, attached.stderr);
    s.project.program([s.volume, attachment()]);
    const refused = s.project.run(["up", "--yes", "--skip-preview"]);
    assert.notEqual(refused.code, 0);
    const named = /`kindling ([a-z]+) ([^`\s]+)`/.exec(refused.stdout + refused.stderr);
    assert.ok(named, refused.stdout + refused.stderr);
    assert.deepEqual(await s.backend.connections(s.volumeId).then((cs) => cs.length), 1, "the refused create left nothing");
    const ran = s.cli([named[1], named[2]]);
    assert.equal(ran.code, 0, `the command the error names works: ${ran.stderr}`);
    s.project.up();
    const here = s.project.stateResources().here;
    assert.deepEqual((await s.backend.connections(s.volumeId)).map((c) => c.id), [here.id]);
    assert.deepEqual(loopsOver(s.file), [here.outputs.devicePath]);
  });

  test("destroy right after a kill leaves nothing: at worst it names a command that works", async (t) => {
    if (needsRoot(t)) return;
    const s = await setup("destroyed");
    cleanups.push(s.cleanup);
    s.project.program([s.volume, attachment()]);
    const engine = s.project.start(["up", "--yes", "--skip-preview"], { env: { PATH: `${slowLosetup(s.dir)}:${s.project.env.PATH}` }, group: true });
    assert.ok(await until(() => loopsOver(s.file).length > 0, 1200, 25), "losetup made a device");
    process.kill(engine.pid as number, "SIGSTOP");
    const recorded = await until(async () => (await s.backend.connections(s.volumeId)).some((c) => c.devicePath !== undefined), 400, 25);
    await killRun(engine);
    assert.ok(recorded);
    if (locked(s.project)) s.project.ok(["cancel", "--yes"]);
    const destroyed = s.project.run(["destroy", "--yes"]);
    if (destroyed.code !== 0) {
      const named = /`kindling ([a-z]+) ([^`\s]+)`/.exec(destroyed.stdout + destroyed.stderr);
      assert.ok(named, `a failed destroy says what to run:\n${destroyed.stdout}\n${destroyed.stderr}`);
      const ran = s.cli([named[1], named[2]]);
      assert.equal(ran.code, 0, `the command the error names works: ${ran.stderr}`);
      s.project.ok(["destroy", "--yes"]);
    }
    assert.deepEqual(loopsOver(s.file), []);
    assert.deepEqual(await s.backend.persistence.getConnections({}), []);
    assert.deepEqual(await s.backend.persistence.getVolumes({}), []);
  });
});
