// The object driver's scenarios (cinderlib's functional tests, notes/cinderlib.md section 3) on
// both real stores, radosgw through S3 and a Swift all-in-one through Swift's API, with SQLite
// records; each claim is checked against what the bucket or container really holds, listed and
// read with kindling's driver out of the way.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Backend, InUseError, InvalidInputError } from "../provider/library";
import { loadState, readHeader } from "../provider/drivers/object/log";
import { logKey, snapshotKey } from "../provider/drivers/object/layout";
import type { ObjectStore } from "../provider/drivers/object/store";
import { GiB, MiB } from "../provider/util/sizes";
import { readAt, writeAt } from "./helpers/backends";
import { removeDir } from "./helpers/env";
import { objectBackendConfig, startObjectStores, STORE_KINDS, STORE_LABEL, volumeKeys, keysUnder, type ObjectStores, type StoreKind } from "./helpers/object-backends";
import { objectStoresMissing, s3 } from "./helpers/objectstores";
import { SwiftStore } from "../provider/drivers/object/swift";

let stores: ObjectStores | undefined;
const missing = objectStoresMissing();

before(async () => {
  stores = await startObjectStores();
});

after(() => stores?.stop());

interface Rig {
  backend: Backend;
  store: ObjectStore;
  config: Record<string, unknown>;
  dir: string;
  /** Another backend on the same bucket and records: another program on this host. */
  reopen(extra?: Record<string, unknown>): Promise<Backend>;
}

async function rig(kind: StoreKind, extra: Record<string, unknown> = {}): Promise<Rig> {
  assert.ok(stores, "the object stores are up");
  const { config, store, dir } = await objectBackendConfig(stores, kind, extra);
  const persistence = { storage: "sqlite", path: join(dir, "records.db") };
  const open = (more: Record<string, unknown> = {}) => Backend.open({ name: "objects", ...config, ...more, persistence } as never);
  return { backend: await open(), store, config, dir, reopen: open };
}

/** The same store, counting the bytes its GETs return. */
function countingStore(inner: ObjectStore): { store: ObjectStore; gotBytes: number } {
  const out = { gotBytes: 0, store: inner };
  out.store = new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop !== "get") {
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      }
      return async (key: string, range?: { offset: number; length: number }) => {
        const body = await target.get(key, range);
        out.gotBytes += body?.length ?? 0;
        return body;
      };
    },
  });
  return out;
}

const pattern = (n: number, seed: number) => {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7) & 0xff;
  return b;
};

for (const kind of STORE_KINDS) {
  describe(`object driver on ${STORE_LABEL[kind]}`, { skip: missing }, () => {
    let r: Rig;
    before(async () => {
      r = await rig(kind);
    });
    after(async () => {
      await r?.backend.close();
      if (r) removeDir(r.dir);
    });

    test("stats have the Cinder keys and count what is created", async () => {
      const before = await r.backend.stats(true);
      assert.equal(before.vendor_name, "kindling");
      assert.equal(before.volume_backend_name, "objects");
      assert.equal(before.pools.length, 1);
      assert.ok("free_capacity_gb" in before.pools[0] && "total_capacity_gb" in before.pools[0]);
      const v = await r.backend.createVolume({ name: "counted", sizeGiB: 3 });
      const after = await r.backend.stats(true);
      assert.equal(after.pools[0].total_volumes, before.pools[0].total_volumes + 1);
      assert.equal(after.provisioned_capacity_gb, before.provisioned_capacity_gb + 3);
      await v.delete();
    });

    test("create: the volume is its first log record in the store, nothing else", async () => {
      const v = await r.backend.createVolume({ name: "fresh", sizeGiB: 64 });
      assert.equal(v.status, "available");
      assert.equal(v.sizeGiB, 64);
      const keys = await volumeKeys(r.store, v.id);
      assert.deepEqual(keys, [logKey(v.id, 0)], "a 64 GiB volume is one small object until written");
      const inspected = await v.inspect();
      assert.equal(inspected.exists, true);
      assert.equal(inspected.sizeBytes, 64 * GiB);
      assert.equal(inspected.allocatedBytes, 0);
      await v.delete();
      assert.deepEqual(await volumeKeys(r.store, v.id), [], "delete leaves no object of the volume");
      await v.delete(); // a second delete of a deleted volume is no error
      assert.equal(v.deleted, true);
    });

    test("disk I/O: what is flushed is in the store and reads back from a cold process", async () => {
      const v = await r.backend.createVolume({ name: "io", sizeGiB: 1 });
      const a = pattern(3 * MiB + 123, 1);
      const b = pattern(5000, 2);
      await writeAt(v, a, 7 * MiB + 512);
      await writeAt(v, b, 333); // not sector-aligned: read, modify, write of one block
      assert.ok((await volumeKeys(r.store, v.id)).length > 1, "the data went up as log records");
      const other = await r.reopen();
      try {
        const same = await other.getVolume(v.id);
        assert.deepEqual(await readAt(same, a.length, 7 * MiB + 512), a);
        assert.deepEqual(await readAt(same, b.length, 333), b);
        assert.deepEqual(await readAt(same, 4096, 512 * MiB), Buffer.alloc(4096), "unwritten blocks read as zeroes");
      } finally {
        await other.close();
      }
      await v.delete();
    });

    test("extend: one small record, nothing allocated, whatever the size", async () => {
      const v = await r.backend.createVolume({ name: "grow", sizeGiB: 1 });
      const before = await volumeKeys(r.store, v.id);
      await v.extend(100);
      const after = await volumeKeys(r.store, v.id);
      assert.equal(after.length, before.length + 1);
      const state = await loadState(r.store, v.id);
      assert.equal(state.sizeBytes, 100 * GiB);
      assert.equal((await v.inspect()).sizeGiB, 100);
      await v.delete();
    });

    test("snapshots hold the volume as it was; a volume from one reads its data", async () => {
      const v = await r.backend.createVolume({ name: "snapped", sizeGiB: 1 });
      const original = pattern(2 * MiB, 3);
      await writeAt(v, original, 0);
      const snap = await v.createSnapshot({ name: "before" });
      assert.equal(snap.volumeSizeGiB, 1);
      assert.ok(await r.store.head(snapshotKey(v.id, snap.id)), "the snapshot's object is in the store");
      await writeAt(v, Buffer.from(original).reverse(), 0);
      const restored = await snap.createVolume({ name: "restored" });
      assert.deepEqual(await readAt(restored, original.length, 0), original, "point-in-time data");
      assert.deepEqual(await readAt(v, 16, 0), Buffer.from(original).reverse().subarray(0, 16));
      const snapDevice = await snap.open();
      const fromSnap = Buffer.alloc(original.length);
      await snapDevice.pread(fromSnap, 0);
      await snapDevice.close();
      assert.deepEqual(fromSnap, original);
      // The snapshot may go while a volume made from it lives: the clone holds its own pin.
      await snap.delete();
      assert.equal(await r.store.head(snapshotKey(v.id, snap.id)), undefined);
      assert.deepEqual(await readAt(restored, original.length, 0), original);
      await restored.delete();
      await v.delete();
    });

    test("clone: same data, its own writes, the parent's kept apart; the parent's delete flattens it", async () => {
      const v = await r.backend.createVolume({ name: "parent", sizeGiB: 1 });
      const data = pattern(3 * MiB, 4);
      await writeAt(v, data, 10 * MiB);
      const before = (await keysUnder(r.store, "kindling/v1/vol/")).length;
      const clone = await v.clone({ name: "child" });
      assert.equal(clone.sourceVolumeId, v.id);
      assert.ok((await keysUnder(r.store, "kindling/v1/vol/")).length - before <= 3, "a clone writes a few small objects, no data");
      assert.deepEqual(await readAt(clone, data.length, 10 * MiB), data);
      const mine = pattern(4096, 5);
      await writeAt(clone, mine, 10 * MiB);
      assert.deepEqual(await readAt(v, 4096, 10 * MiB), data.subarray(0, 4096), "the parent is unchanged");
      assert.deepEqual(await readAt(clone, 4096, 10 * MiB), mine);
      const extents = await (async () => {
        const d = await clone.open({ readOnly: true });
        try {
          return await d.extents(0, 1 * GiB);
        } finally {
          await d.close();
        }
      })();
      assert.ok(extents.some((e) => !e.hole && e.offset <= 10 * MiB && e.offset + e.length >= 13 * MiB), "the parent's data shows as data in the clone");
      assert.ok(extents.some((e) => e.hole && e.offset === 0), "what neither wrote is a hole");
      await v.delete(); // dependentClones: flatten (the default)
      assert.deepEqual(await volumeKeys(r.store, v.id), []);
      assert.deepEqual(await readAt(clone, 4096, 10 * MiB), mine);
      assert.deepEqual(await readAt(clone, data.length - 4096, 10 * MiB + 4096), data.subarray(4096));
      assert.equal((await loadState(r.store, clone.id)).parent, undefined, "the clone stands alone");
      await clone.delete();
    });

    test("trim and write-zeroes are map changes; BLOCK_STATUS reports them", async () => {
      const v = await r.backend.createVolume({ name: "holes", sizeGiB: 1 });
      await writeAt(v, pattern(8 * MiB, 6), 0);
      const d = await v.open();
      await d.trim(1 * MiB, 2 * MiB);
      await d.zero(4 * MiB, 1 * MiB, { mayTrim: false });
      await d.zero(6 * MiB + 100, 1000, { mayTrim: true }); // inside a block: written as zeroes
      await d.flush();
      const ext = await d.extents(0, 8 * MiB);
      await d.close();
      const at = (off: number) => ext.find((e) => e.offset <= off && off < e.offset + e.length);
      assert.deepEqual({ hole: at(1 * MiB)?.hole, zero: at(1 * MiB)?.zero }, { hole: true, zero: true });
      assert.deepEqual({ hole: at(4 * MiB)?.hole, zero: at(4 * MiB)?.zero }, { hole: false, zero: true });
      assert.deepEqual({ hole: at(0)?.hole, zero: at(0)?.zero }, { hole: false, zero: false });
      assert.deepEqual(await readAt(v, 2 * MiB, 1 * MiB), Buffer.alloc(2 * MiB));
      assert.deepEqual(await readAt(v, 1000, 6 * MiB + 100), Buffer.alloc(1000));
      assert.deepEqual(await readAt(v, 100, 6 * MiB), pattern(8 * MiB, 6).subarray(6 * MiB, 6 * MiB + 100));
      const state = await loadState(r.store, v.id);
      assert.equal(state.allocatedBytes, 8 * MiB - 3 * MiB, "trimmed and zeroed blocks hold no data");
      await v.delete();
    });

    test("one writer: a second backend's writable open is refused, naming the holder; reads still work", async () => {
      const v = await r.backend.createVolume({ name: "single", sizeGiB: 1 });
      const d = await v.open();
      await d.pwrite(pattern(4096, 7), 0);
      await d.flush();
      const other = await r.reopen();
      try {
        const same = await other.getVolume(v.id);
        await assert.rejects(same.open(), (err: unknown) => err instanceof InUseError && /held by writer/.test((err as Error).message));
        const ro = await same.open({ readOnly: true });
        const got = Buffer.alloc(4096);
        await ro.pread(got, 0);
        await ro.close();
        assert.deepEqual(got, pattern(4096, 7), "a reader sees what the writer flushed");
      } finally {
        await other.close();
      }
      // A second open in the same process shares the writer: one FLUSH covers both.
      const d2 = await v.open();
      await d2.pwrite(pattern(4096, 8), 4096);
      await d.flush();
      await d2.close();
      await d.close();
      assert.deepEqual(await readAt(v, 4096, 4096), pattern(4096, 8));
      await v.delete();
    });

    test("locked by hand: writers are refused until unlocked; delete is refused while a writer holds it", async () => {
      const v = await r.backend.createVolume({ name: "locked", sizeGiB: 1 });
      await v.lock();
      await assert.rejects(v.open(), /lock|held/i);
      await v.unlock({ force: false });
      const d = await v.open();
      await d.close();
      await v.delete();
    });

    test("garbage collection: records nothing reads any more go; a snapshot keeps what it reads", async () => {
      const g = await rig(kind, { checkpointEvery: 4, gcHorizonSeconds: 0 });
      try {
        const v = await g.backend.createVolume({ name: "churn", sizeGiB: 1 });
        const first = pattern(64 * 1024, 10);
        await writeAt(v, first, 0);
        const snap = await v.createSnapshot({ name: "kept" });
        const d = await v.open();
        let last = first;
        for (let i = 0; i < 24; i++) {
          last = pattern(64 * 1024, 11 + i);
          await d.pwrite(last, 0);
          await d.flush();
        }
        await d.close();
        const state = await loadState(g.store, v.id);
        const logs = (await keysUnder(g.store, `kindling/v1/vol/${v.id}/log/`)).length;
        assert.ok(logs < state.seq + 1 - 10, `dead records were deleted: ${logs} log objects for ${state.seq + 1} records`);
        assert.deepEqual(await readAt(v, last.length, 0), last);
        const sd = await snap.open();
        const got = Buffer.alloc(first.length);
        await sd.pread(got, 0);
        await sd.close();
        assert.deepEqual(got, first, "the snapshot's blocks were kept");
        const details = (await v.inspect()).details ?? {};
        assert.equal(details.durability, "remote");
        assert.equal(details.snapshots, 1);
        assert.match(String(details.fencing), kind === "s3" ? /^exact/ : /^best effort/);
        await snap.delete();
        await v.delete();
      } finally {
        await g.backend.close();
        removeDir(g.dir);
      }
    });

    test("snapshot, clone and extend read no map and write no checkpoint; the writer checkpoints the pins before its sweep", async () => {
      const g = await rig(kind, { checkpointEvery: 4, gcHorizonSeconds: 0 });
      try {
        const v = await g.backend.createVolume({ name: "pinned", sizeGiB: 1 });
        // 32 MiB written: a checkpoint of 8,192 blocks (196 KiB), more than the volume's meta reads.
        const bulk = randomBytes(32 * MiB);
        await writeAt(v, bulk, 0);
        const ckpts = () => keysUnder(g.store, `kindling/v1/vol/${v.id}/ckpt/`);
        const before = await ckpts();
        assert.ok(before.length >= 1, "closing the writer left a checkpoint");
        const counted = countingStore(g.store);
        const meta = await loadState(counted.store, v.id, { meta: true });
        assert.equal(meta.sizeBytes, 1 * GiB);
        assert.ok(counted.gotBytes < 160 * 1024, `the volume's meta read ${counted.gotBytes} bytes, not its map`);
        const a = pattern(64 * 1024, 21);
        const d = await v.open();
        await d.pwrite(a, 0);
        await d.flush();
        // Taken while the writer holds the volume, from this process's records (another process alike).
        const snap = await v.createSnapshot({ name: "at-a" });
        const clone = await v.clone({ name: "of-a" });
        await v.extend(2);
        assert.deepEqual(await ckpts(), before, "snapshot, clone and extend wrote no checkpoint");
        // Until the writer makes its checkpoint, the snapshot opens from its base and the records after.
        assert.deepEqual(await readAt(snap, a.length, 0), a);
        let last = a;
        for (let i = 0; i < 16; i++) {
          last = pattern(64 * 1024, 30 + i);
          await d.pwrite(last, 0);
          await d.flush();
        }
        await d.close();
        const after = await ckpts();
        const snapSeq = (JSON.parse(((await g.store.get(snapshotKey(v.id, snap.id))) as Buffer).toString("utf8")) as { seq: number }).seq;
        assert.ok(after.some((k) => k.endsWith(snapSeq.toString(16).padStart(16, "0"))), "the writer made the snapshot's checkpoint");
        assert.ok(after.length <= 4, `superseded checkpoints were deleted: ${after.length} left (${after.map((k) => k.slice(-4)).join(", ")})`);
        // Each still reads its own point in time after the sweep took the records in between.
        assert.deepEqual(await readAt(snap, a.length, 0), a);
        assert.deepEqual(await readAt(clone, a.length, 0), a);
        assert.deepEqual(await readAt(clone, 1 * MiB, 16 * MiB), bulk.subarray(16 * MiB, 17 * MiB));
        assert.deepEqual(await readAt(v, last.length, 0), last);
        assert.equal((await v.inspect()).sizeBytes, 2 * GiB);
        await clone.delete();
        await snap.delete();
        await v.delete();
        assert.deepEqual(await volumeKeys(g.store, v.id), []);
      } finally {
        await g.backend.close();
        removeDir(g.dir);
      }
    });

    test("concurrent writes never overfill a record: each holds at most 8,192 blocks, and every byte reads back", async () => {
      const v = await r.backend.createVolume({ name: "crowded", sizeGiB: 1 });
      const data = randomBytes(96 * MiB);
      const d = await v.open();
      // 96 writes of 1 MiB at once (more than a record's 32 MiB), plus sector writes in between.
      await Promise.all(Array.from({ length: 96 }, (_, i) => d.pwrite(data.subarray(i * MiB, (i + 1) * MiB), i * MiB)));
      await Promise.all(Array.from({ length: 64 }, (_, i) => d.pwrite(data.subarray(i * 4096 + 512, i * 4096 + 1024), i * 4096 + 512)));
      await d.flush();
      await d.close();
      const headers = [];
      for (const k of (await keysUnder(r.store, `kindling/v1/vol/${v.id}/log/`)).sort()) {
        const h = await readHeader(r.store, v.id, parseInt(k.slice(-16), 16));
        if (h?.header.kind === "data") headers.push(h.header);
      }
      assert.ok(headers.length >= 3, `the writes went up in several records (${headers.length})`);
      for (const h of headers) {
        const blocks = (h.data ?? []).reduce((n, [, count]) => n + count, 0);
        assert.ok(blocks <= 8192, `record ${h.seq} holds ${blocks} blocks`);
      }
      const other = await r.reopen();
      try {
        assert.deepEqual(await readAt(await other.getVolume(v.id), data.length, 0), data);
      } finally {
        await other.close();
      }
      await v.delete();
    });

    test("a clone whose objects vanished behind kindling's back no longer holds its parent", async () => {
      const g = await rig(kind, { dependentClones: "refuse" });
      try {
        const v = await g.backend.createVolume({ name: "p", sizeGiB: 1 });
        await writeAt(v, pattern(4096, 12), 0);
        const c = await v.clone({ name: "c" });
        await assert.rejects(v.delete(), (err: unknown) => err instanceof InUseError, "refused while the clone lives");
        for (const k of await volumeKeys(g.store, c.id)) await g.store.delete(k);
        await v.delete();
        assert.deepEqual(await volumeKeys(g.store, v.id), []);
        await c.delete();
      } finally {
        await g.backend.close();
        removeDir(g.dir);
      }
    });

    test("a volume's objects removed behind kindling's back: reads fail, inspect sees it", async () => {
      const v = await r.backend.createVolume({ name: "vandalised", sizeGiB: 1 });
      await writeAt(v, pattern(1 * MiB, 9), 0);
      const keys = await volumeKeys(r.store, v.id);
      const data = keys.filter((k) => k !== logKey(v.id, 0) && k.includes("/log/"));
      // A cold process (no cache) reading a block whose record is gone gets an error, never zeroes.
      for (const k of data) await r.store.delete(k);
      const other = await r.reopen();
      try {
        const same = await other.getVolume(v.id);
        await assert.rejects(readAt(same, 4096, 0), /missing|not found|gone/i);
      } finally {
        await other.close();
      }
      for (const k of await volumeKeys(r.store, v.id)) await r.store.delete(k);
      assert.equal((await v.inspect()).exists, false);
      await v.delete();
    });
  });
}

describe("object driver: bad input and faults", { skip: missing }, () => {
  test("config errors name the field", async () => {
    const bad: Array<[Record<string, unknown>, string]> = [
      [{ api: "s3", endpoint: "http://127.0.0.1:1", accessKey: "a", secretKey: "b", cacheDir: "/tmp/x" }, "bucket"],
      [{ api: "s3", endpoint: "http://127.0.0.1:1", bucket: "abc", accessKey: "a", secretKey: "b", secretKeyFile: "/f", cacheDir: "/tmp/x" }, "secretKey"],
      [{ api: "s3", endpoint: "ftp://x", bucket: "abc", accessKey: "a", secretKey: "b", cacheDir: "/tmp/x" }, "endpoint"],
      [{ api: "s3", endpoint: "http://u:p@127.0.0.1:1", bucket: "abc", accessKey: "a", secretKey: "b", cacheDir: "/tmp/x" }, "endpoint"],
      [{ api: "s3", endpoint: "http://127.0.0.1:1", bucket: "A_B", accessKey: "a", secretKey: "b", cacheDir: "/tmp/x" }, "bucket"],
      [{ api: "swift", container: "abc", cacheDir: "/tmp/x" }, "authUrl"],
      [{ api: "swift", authUrl: "http://127.0.0.1:1/auth/v1.0", user: "u", key: "k", container: "abc", cacheDir: "/tmp/x", blockSizeKiB: 3 }, "blockSizeKiB"],
      [{ api: "swift", authUrl: "http://127.0.0.1:1/auth/v1.0", user: "u", key: "k", container: "abc", cacheDir: "/tmp/x", bucket: "abc" }, "bucket"],
      [{ api: "s3", endpoint: "http://127.0.0.1:1", bucket: "abc", accessKey: "a", secretKey: "b", cacheDir: "/tmp/x", segmentSizeMiB: 16, dirtyLimitMiB: 8 }, "dirtyLimitMiB"],
      [{ api: "s3", endpoint: "http://127.0.0.1:1", bucket: "abc", accessKey: "a", secretKey: "b", cacheDir: "/tmp/x", durability: "sometimes" }, "durability"],
    ];
    for (const [config, field] of bad) {
      assert.throws(() => new Backend({ name: "o", driver: "object", ...config, persistence: { storage: "memory" } } as never), (err: unknown) => {
        assert.ok(err instanceof InvalidInputError, `${JSON.stringify(config)}: ${String(err)}`);
        assert.match((err as InvalidInputError).field ?? "", new RegExp(field), `${JSON.stringify(config)} names ${field}: ${(err as Error).message}`);
        return true;
      });
    }
  });

  test("wrong credentials, a missing bucket, an unreachable endpoint: clear errors, never the secret", async () => {
    assert.ok(stores);
    const secret = "not-the-secret-" + randomBytes(6).toString("hex");
    const base = { name: "o", driver: "object", api: "s3", endpoint: stores.rgw.endpoint, accessKey: stores.rgw.accessKey, cacheDir: join(stores.rgw.cluster.dir, "..", "c"), persistence: { storage: "memory" }, timeoutSeconds: 3 };
    const { config } = await objectBackendConfig(stores, "s3");
    const wrong = await Backend.open({ ...base, bucket: config.bucket, secretKey: secret } as never).then(() => undefined, (e: Error) => e);
    assert.ok(wrong instanceof InvalidInputError, String(wrong));
    assert.match(wrong.message, /refused the credentials/);
    assert.ok(!wrong.message.includes(secret) && !JSON.stringify(wrong).includes(secret));
    const noBucket = await Backend.open({ ...base, bucket: "no-such-bucket-here", secretKey: stores.rgw.secretKey } as never).then(() => undefined, (e: Error) => e);
    assert.ok(noBucket instanceof InvalidInputError && noBucket.field?.endsWith("bucket"), String(noBucket));
    const t0 = Date.now();
    const down = await Backend.open({ ...base, endpoint: "http://127.0.0.1:9", bucket: "abc", secretKey: secret } as never).then(() => undefined, (e: Error) => e);
    assert.ok(down instanceof Error && /127\.0\.0\.1:9/.test(down.message), String(down));
    assert.ok(!down.message.includes(secret));
    assert.ok(Date.now() - t0 < 60_000, "the error comes within the timeout, not never");
    const badKey = await Backend.open({ name: "o", driver: "object", api: "swift", authUrl: stores.swift.authUrl, user: stores.swift.user, key: secret, container: "abc", cacheDir: "/tmp/kindling-swift-bad", persistence: { storage: "memory" } } as never).then(() => undefined, (e: Error) => e);
    assert.ok(badKey instanceof InvalidInputError && /refused user/.test(badKey.message), String(badKey));
    assert.ok(!badKey.message.includes(secret));
  });

  test("radosgw's Swift API ignores If-None-Match: writers are refused there, readers are not", async () => {
    assert.ok(stores);
    const name = `kindling-rgwswift-${process.pid}`;
    const dir = join(stores.rgw.cluster.dir, "..", "rgw-swift");
    const config = { name: "o", driver: "object", api: "swift", authUrl: stores.rgw.swiftAuthUrl, user: stores.rgw.swiftUser, key: stores.rgw.swiftKey, container: name, cacheDir: dir, persistence: { storage: "sqlite", path: join(dir, "r.db") } };
    await new SwiftStore({ authUrl: stores.rgw.swiftAuthUrl, user: stores.rgw.swiftUser, key: stores.rgw.swiftKey, container: name, timeoutMs: 30_000 }).createContainer();
    const backend = await Backend.open(config as never);
    try {
      const v = await backend.createVolume({ name: "unfenced", sizeGiB: 1 });
      await assert.rejects(v.open(), /does not refuse a second create/);
      const ro = await v.open({ readOnly: true });
      const got = Buffer.alloc(4096, 1);
      await ro.pread(got, 0);
      await ro.close();
      assert.deepEqual(got, Buffer.alloc(4096));
      await v.delete();
    } finally {
      await backend.close();
    }
  });

  test("a bucket deleted behind kindling's back: a clear error naming it", async () => {
    assert.ok(stores);
    const r = await rig("s3");
    try {
      const v = await r.backend.createVolume({ name: "orphan", sizeGiB: 1 });
      for (const k of await volumeKeys(r.store, v.id)) await r.store.delete(k);
      // The bucket itself goes (S3 DELETE of the bucket), as an operator might.
      const res = await s3(stores.rgw, "DELETE", `/${String(r.config.bucket)}`);
      assert.ok(res.status === 204 || res.status === 200, `bucket delete: ${res.status}`);
      await assert.rejects(r.backend.createVolume({ name: "after", sizeGiB: 1 }), (err: unknown) => err instanceof InvalidInputError && /bucket/.test((err as Error).message));
    } finally {
      await r.backend.close();
      removeDir(r.dir);
    }
  });
});
