// The lease an operation holds on an object: who may take it over and when, its renewal, and
// what the holder does when another process took it over anyway.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { Backend, ConflictError, InUseError, type Persistence } from "../provider/library";
import type { Lease } from "../provider/persistence/records";
import { thisProcess } from "../provider/util/owner";
import { removeDir, tempDir } from "./helpers/env";

/** Puts `lease` on a volume's record behind the library's back, as another process would. */
async function plant(persistence: Persistence, id: string, lease: Lease | undefined): Promise<void> {
  // By compare-and-set, as a process would: retried when the holder renewed in between.
  for (let i = 0; i < 50; i++) {
    const [record] = await persistence.getVolumes({ id });
    if (await persistence.compareAndSetRecord("volume", { ...record, lease, version: (record.version ?? 1) + 1 }, record.version ?? 1)) return;
  }
  assert.fail("could not plant the lease");
}

function leaseOf(owner: Lease["owner"], heartbeat = new Date().toISOString()): Lease {
  return { token: "planted", owner, operation: "snapshot", takenAt: heartbeat, heartbeat };
}

describe("leases", () => {
  let dir: string;
  let backend: Backend;
  before(async () => {
    dir = tempDir();
    backend = await Backend.open({ name: "leases", driver: "file", path: join(dir, "volumes") }, { leases: { waitMs: 400, staleMs: 2000, heartbeatMs: 50 } });
  });
  after(async () => {
    await backend.close();
    removeDir(dir);
  });

  test("a live holder on this host is waited for, then named; once it is gone its lease is taken over at once", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, name: "held-here" });
    const holder = spawn("sleep", ["60"]);
    try {
      const stat = readFileSync(`/proc/${holder.pid}/stat`, "utf8");
      const start = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
      await plant(backend.persistence, volume.id, leaseOf({ ...thisProcess(), pid: holder.pid as number, start }));
      await assert.rejects(volume.extend(2), (e: unknown) => e instanceof InUseError && e.message.includes(`snapshot by ${thisProcess().host}:${holder.pid}`));
      assert.equal((await backend.getVolume(volume.id)).sizeGiB, 1, "nothing changed while it was held");
    } finally {
      holder.kill("SIGKILL");
      await new Promise((resolve) => holder.once("exit", resolve));
    }
    await volume.extend(2);
    const after = await backend.getVolume(volume.id);
    assert.equal(after.sizeGiB, 2);
    assert.equal(after.busy, undefined, "given back");
  });

  test("another host's lease counts while its heartbeat is fresh, and is taken over once it is stale", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, name: "held-elsewhere" });
    const elsewhere = { host: "another-host.invalid", boot: "b", pid: 1, start: "1" };
    await plant(backend.persistence, volume.id, leaseOf(elsewhere));
    await assert.rejects(volume.update({ description: "x" }), InUseError);
    await plant(backend.persistence, volume.id, leaseOf(elsewhere, new Date(Date.now() - 10_000).toISOString()));
    const stale = await backend.getVolume(volume.id);
    assert.equal(stale.busy?.stale, true, "shown as stale");
    await stale.update({ description: "taken over" });
    assert.equal((await backend.getVolume(volume.id)).description, "taken over");
  });

  test("a lease this very process left behind (its release could not be written) never makes it wait", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, name: "left-behind" });
    await plant(backend.persistence, volume.id, leaseOf(thisProcess()));
    await volume.update({ description: "not waited for" });
    assert.equal((await backend.getVolume(volume.id)).description, "not waited for");
  });

  test("the holder renews its lease while it works", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, name: "slow", extraSpecs: { preallocation: "full" } });
    const beats = new Set<string>();
    const extending = volume.extend(2); // a GiB of zeroes: long enough for several renewals
    while (true) {
      const [record] = await backend.persistence.getVolumes({ id: volume.id });
      if (!record.lease) {
        if (record.sizeGiB === 2) break;
      } else beats.add(record.lease.heartbeat);
      await sleep(20);
    }
    await extending;
    assert.ok(beats.size >= 2, `the heartbeat moved (${beats.size} seen)`);
  });

  test("a holder whose lease was taken over stops with a ConflictError instead of writing over the new holder", async () => {
    const volume = await backend.createVolume({ sizeGiB: 1, name: "taken", extraSpecs: { preallocation: "full" } });
    const extending = volume.extend(2);
    let seen: Lease | undefined;
    while (!seen) {
      seen = (await backend.persistence.getVolumes({ id: volume.id }))[0].lease;
      await sleep(5);
    }
    // Another process judged this one gone and took the volume over.
    await plant(backend.persistence, volume.id, leaseOf({ host: "another-host.invalid", boot: "b", pid: 1, start: "1" }));
    await assert.rejects(extending, (e: unknown) => e instanceof ConflictError && /while this process held its lease/.test(e.message));
    const [record] = await backend.persistence.getVolumes({ id: volume.id });
    assert.equal(record.lease?.token, "planted", "the new holder's lease stands");
  });
});
