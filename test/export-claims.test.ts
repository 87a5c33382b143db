// Export claims and writer locks in the records: who serves a connection's export, who writes a
// volume, and when a holder no longer counts (its process gone, its heartbeat stale elsewhere).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { hostname } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ExportClaims, WriterLocks, exportClaimKey, liveClaims, waitForClaimRelease, writerLockKey } from "../provider/library/export-claims";
import { SqlitePersistence } from "../provider/persistence/sqlite";
import type { Persistence } from "../provider/persistence";
import { thisProcess, type ProcessIdentity } from "../provider/util/owner";
import { removeDir, tempDir } from "./helpers/env";

/** A process of this host that has exited. */
function deadProcess(): ProcessIdentity {
  const r = spawnSync("true");
  return { ...thisProcess(), pid: r.pid as number, start: "1" };
}

const elsewhere = (pid: number): ProcessIdentity => ({ host: "another-host", boot: "b00t", pid, start: "1" });

describe("export claims and writer locks", () => {
  let dir: string;
  let persistence: Persistence;

  before(() => {
    dir = tempDir();
    persistence = new SqlitePersistence(join(dir, "records.db"));
  });
  after(async () => {
    await persistence.close();
    removeDir(dir);
  });

  test("liveClaims: a claim counts while its owner runs here, or renews elsewhere; dead and stale claims are removed", async () => {
    const mine = new ExportClaims(1000);
    await mine.hold(persistence, { connectionId: "c-live", volumeId: "v1", mode: "rw" });
    await mine.hold(persistence, { connectionId: "c-snap", volumeId: "v1", snapshotId: "s1", mode: "ro" });
    await new ExportClaims(1000, deadProcess()).hold(persistence, { connectionId: "c-dead", volumeId: "v1", mode: "rw" });
    await new ExportClaims(15_000, elsewhere(7)).hold(persistence, { connectionId: "c-far", volumeId: "v2", mode: "ro" });
    const staleKey = exportClaimKey("c-stale", elsewhere(8));
    await persistence.setKeyValue({
      key: staleKey,
      value: JSON.stringify({ owner: elsewhere(8), heartbeat: Date.now() - 60_000, connectionId: "c-stale", volumeId: "v2", mode: "ro", staleMs: 15_000 }),
    });
    // An old heartbeat of a process that still runs here: it is alive, maybe busy, and still
    // has its clients.
    const oldKey = exportClaimKey("c-busy", thisProcess());
    await persistence.setKeyValue({
      key: oldKey,
      value: JSON.stringify({ owner: thisProcess(), heartbeat: Date.now() - 60_000, connectionId: "c-busy", volumeId: "v3", mode: "ro", staleMs: 1000 }),
    });
    await persistence.setKeyValue({ key: "nbd/export/c-junk/x", value: "not json" });

    const ids = (claims: Array<{ connectionId: string }>) => claims.map((c) => c.connectionId).sort();
    assert.deepEqual(ids(await liveClaims(persistence)), ["c-busy", "c-far", "c-live", "c-snap"]);
    assert.deepEqual(ids(await liveClaims(persistence, { volumeId: "v1" })), ["c-live", "c-snap"], "a volume's claims include its snapshots'");
    assert.deepEqual(ids(await liveClaims(persistence, { snapshotId: "s1" })), ["c-snap"]);
    assert.deepEqual(ids(await liveClaims(persistence, { connectionId: "c-far" })), ["c-far"]);
    const [live] = await liveClaims(persistence, { connectionId: "c-live" });
    assert.deepEqual({ ...live, heartbeat: 0 }, { owner: thisProcess(), heartbeat: 0, connectionId: "c-live", volumeId: "v1", mode: "rw", staleMs: 1000 });
    const keys = (await persistence.getKeyValues()).map((kv) => kv.key);
    assert.ok(!keys.some((k) => k.startsWith("nbd/export/c-dead/")), "a dead owner's claim is removed");
    assert.ok(!keys.includes(staleKey), "a stale claim from elsewhere is removed");
    assert.ok(!keys.includes("nbd/export/c-junk/x"), "an unreadable claim is removed");
    assert.ok(keys.includes(oldKey));

    for (const id of ["c-live", "c-snap", "c-busy"]) await mine.release(persistence, id);
    await new ExportClaims(15_000, elsewhere(7)).release(persistence, "c-far");
    assert.deepEqual(await liveClaims(persistence), []);
  });

  test("read-only exports served by two servers: each gives back only its own claim", async () => {
    const a = new ExportClaims();
    const b = new ExportClaims(15_000, elsewhere(9));
    await a.hold(persistence, { connectionId: "c-shared", volumeId: "v4", mode: "ro" });
    await b.hold(persistence, { connectionId: "c-shared", volumeId: "v4", mode: "ro" });
    await a.release(persistence, "c-shared");
    const left = await liveClaims(persistence, { connectionId: "c-shared" });
    assert.deepEqual(left.map((c) => c.owner.host), ["another-host"]);
    await b.release(persistence, "c-shared");
  });

  test("waitForClaimRelease: false while a live server holds the claim, true once it is given back or its owner is dead", async () => {
    const claims = new ExportClaims();
    await claims.hold(persistence, { connectionId: "c-wait", volumeId: "v5", mode: "rw" });
    assert.equal(await waitForClaimRelease(persistence, "c-wait", 300), false);
    const waiting = waitForClaimRelease(persistence, "c-wait", 30_000);
    setTimeout(() => void claims.release(persistence, "c-wait"), 200);
    assert.equal(await waiting, true);
    await new ExportClaims(15_000, deadProcess()).hold(persistence, { connectionId: "c-gone", volumeId: "v5", mode: "rw" });
    assert.equal(await waitForClaimRelease(persistence, "c-gone", 30_000), true);
    assert.equal(await waitForClaimRelease(persistence, "c-never", 0), true, "no claim at all: nothing to wait for");
  });

  test("writer locks: one holder at a time, named when refused; dead, stale and unreadable locks are taken over", async () => {
    const first = new WriterLocks(15_000);
    const second = new WriterLocks(15_000, elsewhere(10));
    assert.deepEqual(await first.acquire(persistence, "w1"), { ok: true });
    assert.deepEqual(await first.acquire(persistence, "w1"), { ok: true }, "renewing its own lock");
    const refused = await second.acquire(persistence, "w1");
    assert.equal(refused.ok, false);
    assert.ok(!refused.ok && refused.holder === `${hostname()}:${process.pid}`);
    await second.release(persistence, "w1");
    assert.equal((await persistence.getKeyValues(writerLockKey("w1"))).length, 1, "only its holder releases a lock");
    await first.release(persistence, "w1");
    assert.deepEqual(await second.acquire(persistence, "w1"), { ok: true });
    await second.release(persistence, "w1");

    await new WriterLocks(15_000, deadProcess()).acquire(persistence, "w2");
    assert.deepEqual(await first.acquire(persistence, "w2"), { ok: true }, "its holder's process is gone");
    await persistence.setKeyValue({ key: writerLockKey("w3"), value: JSON.stringify({ owner: elsewhere(11), heartbeat: Date.now() - 60_000 }) });
    assert.deepEqual(await first.acquire(persistence, "w3"), { ok: true }, "its heartbeat is stale");
    await persistence.setKeyValue({ key: writerLockKey("w4"), value: "{" });
    assert.deepEqual(await first.acquire(persistence, "w4"), { ok: true }, "nobody can renew an unreadable lock");
    // A lock in the form older servers wrote, held by a process that still runs.
    await persistence.setKeyValue({ key: writerLockKey("w5"), value: JSON.stringify({ owner: `${hostname()}:${process.ppid}:123`, heartbeat: Date.now() }) });
    const legacy = await first.acquire(persistence, "w5");
    assert.ok(!legacy.ok && legacy.holder === `${hostname()}:${process.ppid}`, "an older server's live lock is respected");
    for (const id of ["w2", "w3", "w4"]) await first.release(persistence, id);
    await persistence.deleteKeyValue(writerLockKey("w5"));
  });
});
