// Faults of a real Ceph cluster as kindling's users meet them: the OSD stops answering in the
// middle of operations, the restricted client reaches for a pool it has no caps on, and the key
// is wrong. Each must give a clear, typed error that says what to do, leak no key, and leave
// records and images in agreement.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Backend, BackendError, KindlingError, type BackendConfig, type SnapshotRecord, type VolumeRecord } from "../provider/library";
import { SqlitePersistence } from "../provider/persistence/sqlite";
import { readAt, writeAt } from "./helpers/backends";
import { CephCluster, cephMissing } from "./helpers/ceph";
import { PATTERN, removeDir, tempDir } from "./helpers/env";
import { kindling } from "./helpers/cli";

const skip = cephMissing();
let cluster: CephCluster | undefined;
/** The OSD while it is stopped: after() resumes it whatever happened, or down.sh could not kill it cleanly. */
let stoppedOsd: number | undefined;
const opened: Backend[] = [];
const dirs: string[] = [];

before(async () => {
  if (skip) return;
  // The restricted client gets caps on `volumes` only; `private` exists, made by the admin.
  cluster = await CephCluster.start(["volumes"]);
  cluster.admin("ceph", ["osd", "pool", "create", "private", "8", "8"]);
  cluster.admin("rbd", ["pool", "init", "private"]);
});

after(async () => {
  if (stoppedOsd !== undefined) process.kill(stoppedOsd, "SIGCONT");
  for (const backend of opened) await backend.close().catch(() => undefined);
  if (cluster) {
    cluster.stop();
    removeDir(dirname(cluster.dir));
  }
  for (const dir of dirs) removeDir(dir);
});

function ceph(): CephCluster {
  assert.ok(cluster, "the Ceph cluster is up");
  return cluster;
}

const images = (pool: string) => ceph().rbdJson<string[]>(["ls", pool]).sort();

async function open(extra: Record<string, unknown> = {}, name = "faults"): Promise<Backend> {
  const dir = tempDir();
  dirs.push(dir);
  const backend = await Backend.open(ceph().backend(name, extra) as unknown as BackendConfig, { persistence: new SqlitePersistence(join(dir, "kindling.db")) });
  opened.push(backend);
  return backend;
}

/** Everything an error shows a user or a log: message, stack, stderr, command, hint, causes. */
function shownText(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 10; e = (e as { cause?: unknown }).cause, depth++) {
    const k = e as { message?: string; stack?: string; stderr?: string; command?: string; hint?: string };
    parts.push(String(k.message), String(k.stack), String(k.stderr ?? ""), String(k.command ?? ""), String(k.hint ?? ""));
  }
  return parts.join("\n");
}

/** Awaits a promise that must fail with a kindling error carrying none of `secrets`. */
async function failure(work: Promise<unknown>, secrets: string[] = [ceph().key]): Promise<KindlingError> {
  let result: unknown;
  try {
    result = await work;
  } catch (err) {
    const text = shownText(err);
    for (const secret of secrets) {
      assert.ok(secret.length > 10);
      assert.ok(!text.includes(secret), `a key appears in the error: ${text.slice(0, 400)}`);
    }
    assert.ok(err instanceof KindlingError, `a typed kindling error, not ${String(err)}`);
    return err;
  }
  assert.fail(`expected a failure, got ${JSON.stringify(result)}`);
}

/** A record reduced to what must not change behind a user's back. */
const essence = (r: VolumeRecord) => ({ id: r.id, name: r.name, status: r.status, sizeGiB: r.sizeGiB, location: r.location });

describe("rbd faults: the OSD stops answering", { skip }, () => {
  test("operations fail clearly, no record is lost, and all works again once it is back", async () => {
    const backend = await open({ timeoutSeconds: 5 });
    // The same backend and records for bin/kindling (the defect: `volume list` waited out the timeout and failed).
    const { name: _name, ...entry } = ceph().backend("faults", { timeoutSeconds: 5 });
    const configFile = join(dirs[dirs.length - 1], "kindling.json");
    writeFileSync(configFile, JSON.stringify({ persistence: { storage: "sqlite", path: join(dirs[dirs.length - 1], "kindling.db") }, backends: { faults: entry } }), { mode: 0o600 });
    const a = await backend.createVolume({ sizeGiB: 1, name: "a" });
    await writeAt(a, PATTERN, 0);
    const b = await backend.createVolume({ sizeGiB: 2, name: "b" });
    const aSnap = await a.createSnapshot({ name: "a-snap" });
    const volumesBefore = (await backend.volumes()).map((v) => essence(v.dump()));
    // A failed operation still took and gave back its source's lease: the version moves, nothing else.
    const snapshotEssence = (r: SnapshotRecord) => ({ ...r, version: undefined });
    const snapshotsBefore = (await backend.snapshots()).map((s) => snapshotEssence(s.dump()));

    const assertDidNotAnswer = (err: KindlingError, what: string) => {
      assert.ok(err instanceof BackendError, `${what}: a BackendError, not ${err.name}: ${err.message}`);
      assert.match(err.message, /Ceph did not answer/, what);
      assert.match(err.message, /ceph -s/, `${what}: says what to check`);
    };

    const pid = ceph().osdPid();
    process.kill(pid, "SIGSTOP");
    stoppedOsd = pid;
    let failedCreate: string[] = [];
    try {
      // Records alone do not need the cluster: listing works while it does not answer.
      assert.deepEqual((await backend.volumes()).map((v) => essence(v.dump())), volumesBefore, "listing works while the OSD is stopped");
      const listed = kindling(["--config", configFile, "--json", "volume", "list"]);
      assert.equal(listed.code, 0, `kindling volume list needs no cluster: ${listed.stderr}`);
      assert.deepEqual(listed.json<VolumeRecord[]>().map((v) => v.name).sort(), ["a", "b"]);
      assertDidNotAnswer(await failure(backend.createVolume({ sizeGiB: 1, name: "during" })), "create");
      assertDidNotAnswer(await failure(b.createSnapshot({ name: "b-snap" })), "snapshot");
      assertDidNotAnswer(await failure(b.extend(3)), "extend");
      assertDidNotAnswer(await failure(aSnap.createVolume({ name: "during-child" })), "volume from snapshot");

      const volumes = (await backend.volumes()).map((v) => v.dump());
      for (const known of volumesBefore) {
        assert.deepEqual(essence(volumes.find((v) => v.id === known.id) as VolumeRecord), known, `volume ${known.name} is still recorded as it was`);
      }
      const extra = volumes.filter((v) => !volumesBefore.some((k) => k.id === v.id));
      // Ceph could not even be asked whether the image was made: a record marked error is the safe answer.
      for (const v of extra) assert.equal(v.status, "error", `a failed create is recorded as error, not ${v.status}`);
      assert.ok(extra.every((v) => v.name === "during" || v.name === "during-child"));
      failedCreate = extra.map((v) => v.id);
      const snapshots = (await backend.snapshots()).map((s) => s.dump());
      for (const known of snapshotsBefore) {
        assert.deepEqual(snapshotEssence(snapshots.find((s) => s.id === known.id) as SnapshotRecord), known, `snapshot ${known.name} is still recorded as it was`);
      }
      for (const s of snapshots.filter((x) => !snapshotsBefore.some((k) => k.id === x.id))) {
        assert.equal(s.status, "error", `a failed snapshot is recorded as error, not ${s.status}`);
      }
    } finally {
      process.kill(pid, "SIGCONT");
      stoppedOsd = undefined;
    }

    // Back: everything works, and what the failures left can be cleaned up through kindling.
    const later = await backend.createVolume({ sizeGiB: 1, name: "after" });
    const bSnap = await b.createSnapshot({ name: "b-snap-after" });
    assert.equal(await b.extend(3), 3 * 1024 ** 3);
    assert.equal((await backend.getVolume(b.id)).sizeGiB, 3);
    assert.deepEqual(await readAt(a, PATTERN.length, 0), PATTERN, "the data written before is intact");
    const child = await aSnap.createVolume({ name: "after-child" });
    assert.deepEqual(await readAt(child, PATTERN.length, 0), PATTERN);

    // Every image has a record; every available record has an image.
    const records = (await backend.volumes()).map((v) => v.dump());
    for (const image of images("volumes")) {
      assert.ok(records.some((r) => `volume-${r.id}` === image), `image ${image} has no record`);
    }
    for (const r of records.filter((x) => x.status === "available")) {
      assert.ok(images("volumes").includes(`volume-${r.id}`), `record ${r.name} has no image`);
    }
    for (const s of (await backend.snapshots()).filter((x) => x.status === "error")) await s.delete();
    for (const id of failedCreate) await (await backend.getVolume(id)).delete();
    assert.deepEqual(
      images("volumes"),
      (await backend.volumes()).map((v) => `volume-${v.id}`).sort(),
      "after cleaning up, records and images are the same set",
    );
    assert.ok((await backend.volumes()).every((v) => v.status === "available"));

    await child.delete();
    await bSnap.delete();
    await aSnap.delete();
    for (const v of [later, a, b]) await v.delete();
    assert.deepEqual(images("volumes"), []);
    assert.deepEqual(await backend.volumes(), []);
  });

  test("a delete while the OSD is stopped keeps the record, and goes through later", async () => {
    const backend = await open({ timeoutSeconds: 5 }, "faults-delete");
    const volume = await backend.createVolume({ sizeGiB: 1, name: "doomed" });
    const pid = ceph().osdPid();
    process.kill(pid, "SIGSTOP");
    stoppedOsd = pid;
    try {
      const err = await failure(volume.delete());
      assert.ok(err instanceof BackendError);
      assert.match(err.message, /Ceph did not answer/);
      const record = await backend.getVolume(volume.id);
      assert.equal(record.status, "error_deleting", "recorded as a delete that did not finish");
    } finally {
      process.kill(pid, "SIGCONT");
      stoppedOsd = undefined;
    }
    assert.ok(images("volumes").includes(`volume-${volume.id}`), "the image is still there");
    await volume.delete();
    assert.ok(!images("volumes").includes(`volume-${volume.id}`));
    assert.deepEqual(await backend.volumes(), []);
  });
});

describe("rbd faults: the restricted client on a pool it has no caps on", { skip }, () => {
  const assertNotAllowed = (err: KindlingError) => {
    assert.ok(err instanceof BackendError, `${err.name}: ${err.message}`);
    assert.match(err.message, /client\.kindling is not allowed/);
    assert.match(err.message, /profile rbd pool=/, "says what to grant");
  };

  test("a backend on pool private is refused at setup, naming the user and what to do", async () => {
    const err = await failure(Backend.open(ceph().backend("private", { pool: "private" }) as unknown as BackendConfig));
    assertNotAllowed(err);
    assert.match(err.message, /private/, "names the pool");
    const multi = await failure(Backend.open(ceph().backend("mixed", { pool: undefined, pools: { ok: "volumes", secret: "private" } }) as unknown as BackendConfig));
    assertNotAllowed(multi);
    assert.deepEqual(images("private"), []);
  });

  test("an image whose data would go to pool private is refused, and nothing is left", async () => {
    const backend = await open({}, "data-pool");
    const err = await failure(backend.createVolume({ sizeGiB: 1, extraSpecs: { data_pool: "private" } }));
    assertNotAllowed(err);
    assert.deepEqual(images("volumes"), [], "no image in the volumes pool");
    assert.deepEqual(images("private"), []);
    assert.deepEqual(await backend.volumes(), [], "no record");
    // The same client still works where it has caps.
    const volume = await backend.createVolume({ sizeGiB: 1 });
    await volume.delete();
  });
});

describe("rbd faults: a wrong key", { skip }, () => {
  test("authentication failed, with neither the wrong key nor the right one in the error", async () => {
    const wrong = execFileSync("ceph-authtool", ["--gen-print-key"], { encoding: "utf8" }).trim();
    assert.match(wrong, /^[A-Za-z0-9+/]{16,}={0,2}$/, "a well-formed key, only not this user's");
    assert.notEqual(wrong, ceph().key);
    const err = await failure(Backend.open(ceph().backend("wrong-key", { key: wrong, timeoutSeconds: 5 }) as unknown as BackendConfig), [wrong, ceph().key]);
    assert.ok(err instanceof BackendError, `${err.name}: ${err.message}`);
    assert.match(err.message, /authentication failed/);
    assert.match(err.message, /client\.kindling/);
    assert.match(err.message, /key or keyring/, "says what to check");

    // The same through a keyring file.
    const dir = tempDir();
    dirs.push(dir);
    const keyring = join(dir, "wrong.keyring");
    writeFileSync(keyring, `[client.kindling]\n\tkey = ${wrong}\n`, { mode: 0o600 });
    const { key: _key, ...base } = ceph().backend("wrong-keyring", { timeoutSeconds: 5 });
    const viaKeyring = await failure(Backend.open({ ...base, keyring } as unknown as BackendConfig), [wrong, ceph().key]);
    assert.match(viaKeyring.message, /authentication failed/);
    assert.deepEqual(images("volumes"), []);
  });
});
