// Names and ids that look harmless: a name equal to another object's id (D13), and an id given
// in upper case (D12). Through the library, on a file backend with SQLite records.
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Backend, ConflictError, InvalidInputError } from "../provider/library";
import { isId, nameProblem, normalizeId } from "../provider/util/names";
import { fileBackend } from "./helpers/backends";
import { listTree, removeDir } from "./helpers/env";

describe("a name shaped like an id (D13)", () => {
  let backend: Backend;
  let dir: string;
  before(async () => ({ backend, dir } = await fileBackend("sqlite")));
  after(async () => {
    await backend.close();
    removeDir(dir);
  });

  test("a volume named like another volume's id is refused, and deleting by that id deletes only that volume", async () => {
    const prod = await backend.createVolume({ sizeGiB: 1, name: "prod" });
    const other = await backend.createVolume({ sizeGiB: 1, name: "other" });
    const tree = listTree(dir);
    for (const name of [prod.id, prod.id.toUpperCase()]) {
      await assert.rejects(backend.createVolume({ sizeGiB: 1, name }), (err: unknown) =>
        err instanceof InvalidInputError && err.field === "name" && /must not be a UUID/.test(err.rule));
      await assert.rejects(other.clone({ name }), /^InvalidInputError: name: must not be a UUID/);
      await assert.rejects(other.update({ name }), /name: must not be a UUID/);
    }
    assert.deepEqual(listTree(dir), tree, "nothing was created");
    assert.equal((await backend.getVolume("other")).name, "other", "the refused rename changed nothing");
    assert.deepEqual((await backend.volumes()).map((v) => v.name).sort(), ["other", "prod"]);

    // `delete <id>` means the volume with that id: there is no other volume it could mean.
    await (await backend.getVolume(prod.id)).delete();
    assert.deepEqual((await backend.volumes()).map((v) => v.id), [other.id]);
    assert.ok(existsSync(join(dir, "volumes", `volume-${other.id}`)), "the other volume's file is still there");
    await other.delete();
  });

  test("a snapshot named like a snapshot's or a volume's id is refused", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, name: "snapped" });
    const snapshot = await volume.createSnapshot({ name: "first" });
    for (const name of [snapshot.id, volume.id, snapshot.id.toUpperCase()]) {
      await assert.rejects(volume.createSnapshot({ name }), (err: unknown) => err instanceof InvalidInputError && err.field === "name");
      await assert.rejects(snapshot.createVolume({ name }), (err: unknown) => err instanceof InvalidInputError && err.field === "name");
      await assert.rejects(snapshot.update({ name }), (err: unknown) => err instanceof InvalidInputError && err.field === "name");
    }
    assert.deepEqual((await volume.snapshots()).map((s) => s.name), ["first"]);
    assert.equal((await backend.volumes()).length, 1);
    await snapshot.delete();
    await volume.delete();
  });
});

describe("an upper-case id (D12)", () => {
  let backend: Backend;
  let dir: string;
  before(async () => ({ backend, dir } = await fileBackend("sqlite")));
  after(async () => {
    await backend.close();
    removeDir(dir);
  });

  test("createVolume with an upper-case id records it in lower case: shown, listed and deleted, no error record", async () => {
    const given = "FFFFFFFF-FFFF-4FFF-8FFF-FFFFFFFFFFFF";
    const volume = await backend.createVolume({ sizeGiB: 1, id: given });
    assert.equal(volume.id, given.toLowerCase());
    assert.equal(volume.status, "available");
    assert.deepEqual(readdirSync(join(dir, "volumes")).filter((f) => f.startsWith("volume-")), [`volume-${given.toLowerCase()}`]);
    assert.deepEqual((await backend.volumes()).map((v) => [v.id, v.status]), [[given.toLowerCase(), "available"]]);
    assert.equal((await backend.getVolume(given.toLowerCase())).id, volume.id);

    // The same id in the other case is the same id: a conflict, not a second volume.
    for (const id of [given, given.toLowerCase()]) {
      await assert.rejects(backend.createVolume({ sizeGiB: 1, id }), (err: unknown) => err instanceof ConflictError && err.message.includes(given.toLowerCase()));
    }
    assert.equal((await backend.volumes()).length, 1, "still one volume");

    await (await backend.getVolume(given.toLowerCase())).delete();
    assert.deepEqual(await backend.volumes(), [], "no record left behind, in error or otherwise");
    assert.deepEqual(readdirSync(join(dir, "volumes")).filter((f) => f.startsWith("volume-")), []);
  });

  test("clone, snapshot and volume-from-snapshot ids are recorded in lower case too", async () => {
    const source = await backend.createVolume({ sizeGiB: 1, name: "src" });
    const clone = await source.clone({ name: "copy", id: "0190A6E4-7C3B-7D2E-9F10-ABCDEF012345" });
    assert.equal(clone.id, "0190a6e4-7c3b-7d2e-9f10-abcdef012345");
    const snapshot = await source.createSnapshot({ name: "snap", id: "0190A6E4-7C3B-7D2E-9F10-ABCDEF012346" });
    assert.equal(snapshot.id, "0190a6e4-7c3b-7d2e-9f10-abcdef012346");
    assert.equal((await backend.getSnapshot(snapshot.id)).name, "snap");
    const restored = await snapshot.createVolume({ name: "restored", id: "0190A6E4-7C3B-7D2E-9F10-ABCDEF012347" });
    assert.equal(restored.id, "0190a6e4-7c3b-7d2e-9f10-abcdef012347");
    for (const id of [restored.id, clone.id]) await (await backend.getVolume(id)).delete();
    await (await backend.getSnapshot(snapshot.id)).delete();
    await source.delete();
    assert.deepEqual(await backend.volumes(), []);
    assert.deepEqual(await backend.snapshots(), []);
  });

  test("an id that is not a UUID is still refused before anything is recorded", async () => {
    for (const id of ["FFFFFFFF-FFFF-4FFF-8FFF-FFFFFFFFFFF", "not-an-id", "{ffffffff-ffff-4fff-8fff-ffffffffffff}"]) {
      await assert.rejects(backend.createVolume({ sizeGiB: 1, id }), (err: unknown) => err instanceof InvalidInputError && err.field === "id");
    }
    assert.deepEqual(await backend.volumes(), []);
  });
});

test("isId accepts a UUID in any case; normalizeId gives the lower-case form", () => {
  const id = "01a230b5-ee80-77bb-b105-761be997c22b";
  for (const form of [id, id.toUpperCase(), "01A230b5-Ee80-77bB-B105-761be997C22b"]) {
    assert.equal(isId(form), true, form);
    assert.equal(normalizeId(form), id);
    assert.match(nameProblem(form) ?? "", /must not be a UUID/);
  }
  for (const notId of ["", "prod", `${id} `, ` ${id}`, `${id}0`, id.replaceAll("-", ""), `{${id}}`, "g1a230b5-ee80-77bb-b105-761be997c22b"]) {
    assert.equal(isId(notId), false, notId);
  }
});
