// The provider on its own: what check and diff decide before anything runs (what preview shows),
// and what create takes up again after an interrupted run.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as provider from "../provider/pulumi";
import { UNKNOWN } from "../provider/pulumi/inputs";
import { removeDir, tempDir } from "./helpers/env";

const backend = { name: "local", driver: "file", path: "/srv/volumes" };
const base = { backend, sizeGiB: 2, name: "db", resourceName: "db", ownerKey: "p/s/db" };
const state = { ...base, volumeId: "01a20f56-c115-7594-b0c7-57848923d17f", status: "available", backendName: "local", createdAt: "x", dump: {}, __provider: "old code" };

describe("volume check", () => {
  test("values unknown in preview are not reported, whatever the property's type", async () => {
    const { failures } = await provider.volume.check({}, { backend, sizeGiB: UNKNOWN, metadata: UNKNOWN, snapshotId: UNKNOWN, resourceName: "v" });
    assert.deepEqual(failures, []);
  });

  test("the default name is stable for a resource and different between resources", async () => {
    const a = (await provider.volume.check({}, { backend, sizeGiB: 1, resourceName: "data", ownerKey: "proj/dev/data" })).inputs.name;
    const again = (await provider.volume.check({}, { backend, sizeGiB: 1, resourceName: "data", ownerKey: "proj/dev/data" })).inputs.name;
    const other = (await provider.volume.check({}, { backend, sizeGiB: 1, resourceName: "data", ownerKey: "proj/prod/data" })).inputs.name;
    assert.match(a as string, /^data-[0-9a-f]{8}$/);
    assert.equal(a, again);
    assert.notEqual(a, other);
    const kept = (await provider.volume.check({ name: "given-before" }, { backend, sizeGiB: 1, resourceName: "data" })).inputs.name;
    assert.equal(kept, "given-before", "an earlier name is kept");
  });

  test("each failure names its property", async () => {
    const { failures } = await provider.volume.check({ sizeGiB: 5 }, {
      backend: { ...backend, colour: "red" }, sizeGiB: 3, name: "a/b", extraSpecs: { x: "1" }, snapshotId: "s", sourceVolumeId: "v",
    });
    const by = Object.fromEntries(failures.map((f) => [f.property, f.reason]));
    assert.match(by.name, /^name: must not contain/);
    assert.match(by.sizeGiB, /smaller than the volume's real size \(5 GiB\)/);
    assert.match(by.snapshotId, /at most one/);
    assert.match(by.backend, /backend\.colour: unknown field/);
  });

  test("driver checks run when the backend is valid", async () => {
    const { failures } = await provider.volume.check({}, { backend, sizeGiB: 1, extraSpecs: { x: "1" }, qosSpecs: { read_iops_sec: "-3" }, pool: "nope" });
    assert.deepEqual(failures.map((f) => f.property).sort(), ["extraSpecs", "pool", "qosSpecs"]);
  });
});

describe("volume diff", () => {
  test("nothing changed: no changes, and __provider is not compared", async () => {
    const d = await provider.volume.diff(state.volumeId, state, { ...base, __provider: "new code" });
    assert.deepEqual(d, { changes: false, replaces: [], stables: ["volumeId", "backendName", "createdAt", "location"], deleteBeforeReplace: false });
  });

  test("growing, metadata and a credential-like backend setting change in place", async () => {
    for (const news of [{ ...base, sizeGiB: 3 }, { ...base, metadata: { a: "b" } }, { ...base, backend: { ...backend, copyMode: "copy" } }]) {
      const d = await provider.volume.diff(state.volumeId, state, news);
      assert.equal(d.changes, true);
      assert.deepEqual(d.replaces, []);
    }
  });

  test("a pool or other storage replaces; keeping the name deletes first", async () => {
    for (const [news, key] of [
      [{ ...base, pool: "fast" }, "pool"],
      [{ ...base, backend: { ...backend, path: "/elsewhere" } }, "backend"],
    ] as const) {
      const d = await provider.volume.diff(state.volumeId, state, news);
      assert.deepEqual(d.replaces, [key]);
      assert.deepEqual(d.stables, [], "a replacement keeps nothing");
      assert.equal(d.deleteBeforeReplace, true);
    }
    const renamed = await provider.volume.diff(state.volumeId, state, { ...base, name: "db2", pool: "fast" });
    assert.equal(renamed.deleteBeforeReplace, false, "a new name can be made before the old one goes");
  });

  test("a new source (snapshotId, sourceVolumeId), known or not, is recorded in place (D2)", async () => {
    const fromSnapshot = { ...state, snapshotId: "s1" };
    const fromVolume = { ...state, sourceVolumeId: "v1" };
    for (const [olds, news] of [
      [fromSnapshot, { ...base, snapshotId: "s2" }],
      [fromSnapshot, { ...base, snapshotId: UNKNOWN }],
      [fromSnapshot, { ...base }],
      [state, { ...base, snapshotId: "s2" }],
      [fromVolume, { ...base, sourceVolumeId: "v2" }],
      [fromVolume, { ...base, sourceVolumeId: UNKNOWN }],
    ] as const) {
      const d = await provider.volume.diff(state.volumeId, olds, news);
      assert.equal(d.changes, true, JSON.stringify(news));
      assert.deepEqual(d.replaces, [], JSON.stringify(news));
    }
  });

  test("a replace-forcing input unknown in preview is a replacement, so preview never shows less than up does", async () => {
    for (const [news, key] of [
      [{ ...base, pool: UNKNOWN }, "pool"],
      [{ ...base, backend: UNKNOWN as never }, "backend"],
      [{ ...base, backend: { ...backend, path: UNKNOWN } }, "backend"],
    ] as const) {
      const d = await provider.volume.diff(state.volumeId, state, news);
      assert.equal(d.changes, true);
      assert.deepEqual(d.replaces, [key], JSON.stringify(news));
    }
    const credential = await provider.volume.diff(state.volumeId, state, { ...base, backend: { ...backend, copyMode: UNKNOWN } });
    assert.deepEqual(credential.replaces, [], "a setting that is not the storage's identity changes in place");
    const unknownName = await provider.volume.diff(state.volumeId, state, { ...base, name: UNKNOWN, pool: "fast" });
    assert.equal(unknownName.deleteBeforeReplace, true, "a name that may stay the same goes first");
  });

  test("a smaller size does not throw in diff (refresh runs diff too)", async () => {
    const d = await provider.volume.diff(state.volumeId, state, { ...base, sizeGiB: 1 });
    assert.equal(d.changes, true);
  });
});

describe("snapshot diff", () => {
  const snapState = { backend, volumeId: "v", name: "s", snapshotId: "s-id", volumeSizeGiB: 1, status: "available", createdAt: "x", dump: {} };

  test("another volume replaces it, even when that volume is not known yet", async () => {
    for (const volumeId of ["w", UNKNOWN]) {
      const d = await provider.snapshot.diff("s-id", snapState, { backend, volumeId, name: "s" });
      assert.deepEqual(d.replaces, ["volumeId"]);
      assert.equal(d.deleteBeforeReplace, true);
    }
  });

  test("a new name changes in place and keeps the snapshot's id", async () => {
    const d = await provider.snapshot.diff("s-id", snapState, { backend, volumeId: "v", name: "t" });
    assert.equal(d.changes, true);
    assert.deepEqual(d.replaces, []);
    assert.deepEqual(d.stables, ["snapshotId", "volumeSizeGiB", "createdAt"]);
  });
});

describe("check carries the outputs an update never changes (so preview knows them)", () => {
  let dir: string;
  let local: { name: string; driver: string; path: string };
  before(() => {
    dir = tempDir();
    local = { name: "carry", driver: "file", path: join(dir, "volumes") };
  });
  after(() => removeDir(dir));

  test("a new resource gets none; an existing one gets them from its record, then from its old inputs", async () => {
    const news = { backend: local, sizeGiB: 1, resourceName: "data", ownerKey: "p/s/data" };
    const fresh = (await provider.volume.check({}, news)).inputs as Record<string, unknown>;
    assert.equal(fresh.volumeId, undefined, "nothing to carry for a resource being created (or replaced)");
    const made = await provider.volume.create(fresh as never);
    const oldInputs = { ...fresh };
    const renamed = (await provider.volume.check(oldInputs, { ...news, name: "data-renamed" })).inputs as Record<string, unknown>;
    assert.equal(renamed.volumeId, made.id);
    assert.equal(renamed.backendName, "carry");
    assert.equal(renamed.createdAt, made.outs.createdAt);
    assert.equal(renamed.location, made.outs.location);
    assert.equal(renamed.name, "data-renamed");
    // Carried from the old inputs once they hold them, with no record needed.
    const carried = (await provider.volume.check({ ...renamed, backend: { ...local, path: join(dir, "nowhere") } }, { ...news, backend: { ...local, path: join(dir, "nowhere") } })).inputs as Record<string, unknown>;
    assert.equal(carried.volumeId, made.id);

    const snapNews = { backend: local, volumeId: made.id, resourceName: "snap", ownerKey: "p/s/snap" };
    const snapFresh = (await provider.snapshot.check({}, snapNews)).inputs as Record<string, unknown>;
    const snap = await provider.snapshot.create(snapFresh as never);
    const snapRenamed = (await provider.snapshot.check(snapFresh, { ...snapNews, name: "snap-renamed" })).inputs as Record<string, unknown>;
    assert.equal(snapRenamed.snapshotId, snap.id);
    assert.equal(snapRenamed.volumeSizeGiB, 1);
    await provider.snapshot.remove(snap.id, snap.outs);
    await provider.volume.remove(made.id, made.outs);
    const gone = (await provider.volume.check(oldInputs, news)).inputs as Record<string, unknown>;
    assert.equal(gone.volumeId, undefined, "a volume gone from storage leaves its outputs unknown");
  });

  test("create never hands back the volume a replacement is made beside", async () => {
    // Create-before-delete under a new name: the owner record still names the old volume.
    const news = { backend: local, sizeGiB: 1, resourceName: "moved", ownerKey: "p/s/moved" };
    const first = await provider.volume.create((await provider.volume.check({}, news)).inputs as never);
    const second = await provider.volume.create((await provider.volume.check({}, { ...news, name: "moved-2" })).inputs as never);
    assert.notEqual(second.id, first.id);
    assert.equal(second.outs.name, "moved-2");
    // The engine now deletes the old one; the new one stays.
    await provider.volume.remove(first.id, first.outs);
    const again = await provider.volume.create((await provider.volume.check({}, { ...news, name: "moved-2" })).inputs as never);
    assert.equal(again.id, second.id, "a create of the same name after a crash still finds what was made");
    await provider.volume.remove(second.id, second.outs);
  });
});

describe("attachment diff", () => {
  test("any change replaces, detaching first", async () => {
    const olds = { backend, volumeId: "v", protocol: "local" as const, connectionId: "c", connectionInfo: {}, dump: {} };
    const d = await provider.attachment.diff("c", olds, { ...olds, mode: "ro" });
    assert.deepEqual(d.replaces, ["mode"]);
    assert.equal(d.deleteBeforeReplace, true);
    const same = await provider.attachment.diff("c", olds, { backend, volumeId: "v", protocol: "local" });
    assert.equal(same.changes, false);
  });
});
