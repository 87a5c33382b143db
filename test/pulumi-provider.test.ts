// The provider's check and diff on their own: what preview decides before anything runs.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import * as provider from "../provider/pulumi";
import { UNKNOWN } from "../provider/pulumi/inputs";

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
    assert.deepEqual(d, { changes: false, replaces: [], deleteBeforeReplace: false });
  });

  test("growing, metadata and a credential-like backend setting change in place", async () => {
    for (const news of [{ ...base, sizeGiB: 3 }, { ...base, metadata: { a: "b" } }, { ...base, backend: { ...backend, copyMode: "copy" } }]) {
      const d = await provider.volume.diff(state.volumeId, state, news);
      assert.equal(d.changes, true);
      assert.deepEqual(d.replaces, []);
    }
  });

  test("a source, pool or other storage replaces; keeping the name deletes first", async () => {
    for (const [news, key] of [
      [{ ...base, snapshotId: "s2" }, "snapshotId"],
      [{ ...base, pool: "fast" }, "pool"],
      [{ ...base, backend: { ...backend, path: "/elsewhere" } }, "backend"],
    ] as const) {
      const d = await provider.volume.diff(state.volumeId, state, news);
      assert.deepEqual(d.replaces, [key]);
      assert.equal(d.deleteBeforeReplace, true);
    }
    const renamed = await provider.volume.diff(state.volumeId, state, { ...base, name: "db2", pool: "fast" });
    assert.equal(renamed.deleteBeforeReplace, false, "a new name can be made before the old one goes");
  });

  test("an unknown source is a change, not a replacement (the diff at up time decides)", async () => {
    const d = await provider.volume.diff(state.volumeId, state, { ...base, snapshotId: UNKNOWN });
    assert.equal(d.changes, true);
    assert.deepEqual(d.replaces, []);
  });

  test("a smaller size does not throw in diff (refresh runs diff too)", async () => {
    const d = await provider.volume.diff(state.volumeId, state, { ...base, sizeGiB: 1 });
    assert.equal(d.changes, true);
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
