// How the object driver reads a volume back, on both real stores: several sequential readers
// interleaved (nbdcopy's four connections) get the bytes written in a few GETs of MiB, random
// reads get no read-ahead, a cache of nothing reads nothing ahead; and the stores' clients send a
// body given as a list of Buffers whole, and hand a GET's bytes on as they arrive. GETs are
// counted by a store that passes every call on to the real one.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Backend } from "../provider/library";
import { BlockCache } from "../provider/drivers/object/cache";
import { loadState } from "../provider/drivers/object/log";
import { BlockReader } from "../provider/drivers/object/reader";
import { PreconditionFailed, type Body, type ByteRange, type GetOptions, type ObjectStore, type PutOptions } from "../provider/drivers/object/store";
import { MiB } from "../provider/util/sizes";
import { writeAt } from "./helpers/backends";
import { removeDir } from "./helpers/env";
import { objectBackendConfig, startObjectStores, STORE_KINDS, STORE_LABEL, type ObjectStores } from "./helpers/object-backends";
import { objectStoresMissing } from "./helpers/objectstores";

const missing = objectStoresMissing();
let stores: ObjectStores | undefined;
before(async () => {
  stores = await startObjectStores();
});
after(() => stores?.stop());

/** The real store, with each ranged GET's length noted on the way through. */
class CountingStore implements ObjectStore {
  readonly ranged: number[] = [];
  constructor(private readonly inner: ObjectStore) {}
  get where() {
    return this.inner.where;
  }
  get api() {
    return this.inner.api;
  }
  check = () => this.inner.check();
  createContainer = () => this.inner.createContainer();
  put = (key: string, body: Body, opts?: PutOptions) => this.inner.put(key, body, opts);
  get(key: string, range?: ByteRange, opts?: GetOptions) {
    if (range) this.ranged.push(range.length);
    return this.inner.get(key, range, opts);
  }
  read = (key: string) => this.inner.read(key);
  head = (key: string) => this.inner.head(key);
  delete = (key: string) => this.inner.delete(key);
  list = (prefix: string) => this.inner.list(prefix);
  reset(): void {
    this.ranged.length = 0;
  }
  get bytes(): number {
    return this.ranged.reduce((a, b) => a + b, 0);
  }
}

const DATA = 64 * MiB;
const READ = 256 * 1024; // nbdcopy's request size
const LINE = 64 * 1024;

for (const kind of STORE_KINDS) {
  describe(`object driver reads on ${STORE_LABEL[kind]}`, { skip: missing }, () => {
    let backend: Backend;
    let dir: string;
    let store: CountingStore;
    let volumeId: string;
    let blockSize: number;
    const data = randomBytes(DATA);

    before(async () => {
      assert.ok(stores, "the object stores are up");
      const made = await objectBackendConfig(stores, kind);
      dir = made.dir;
      store = new CountingStore(made.store);
      backend = await Backend.open({ name: "objects", ...made.config, persistence: { storage: "sqlite", path: join(dir, "records.db") } } as never);
      const v = await backend.createVolume({ name: "read-back", sizeGiB: 1 });
      volumeId = v.id;
      await writeAt(v, data, 0);
    });
    after(async () => {
      await backend?.close();
      if (dir) removeDir(dir);
    });

    /** A reader of the volume as committed, on a cache of its own, counting from nothing. */
    async function freshReader(cacheBytes: number): Promise<{ reader: BlockReader; cache: BlockCache }> {
      const state = await loadState(store, volumeId);
      blockSize = state.blockSize;
      const cache = new BlockCache(cacheBytes);
      store.reset();
      return { reader: new BlockReader(store, state, cache), cache };
    }

    async function readChecked(reader: BlockReader, offset: number, length: number): Promise<void> {
      const first = offset / blockSize;
      const blocks = Array.from({ length: length / blockSize }, (_, i) => first + i);
      const got = await reader.read(blocks);
      for (const b of blocks) {
        const want = data.subarray(b * blockSize, (b + 1) * blockSize);
        const have = got.get(b);
        assert.ok(have && have.equals(want), `block ${b} reads back as written`);
      }
    }

    test("four interleaved sequential readers get the bytes written, in a few GETs of MiB", async () => {
      const { reader, cache } = await freshReader(256 * MiB);
      // Like nbdcopy: four readers, each through its own quarter, 8 requests in flight each;
      // their requests reach the reader interleaved.
      const quarter = DATA / 4;
      const reads = DATA / READ;
      const readers = Array.from({ length: 4 }, (_, r) => ({ next: r * quarter, end: (r + 1) * quarter }));
      const worker = async (r: { next: number; end: number }) => {
        while (r.next < r.end) {
          const at = r.next;
          r.next += READ;
          await readChecked(reader, at, READ);
          assert.ok(cache.size <= cache.maxBytes, `the cache holds ${cache.size} bytes, at most ${cache.maxBytes}`);
        }
      };
      const workers: Array<Promise<void>> = [];
      for (let slot = 0; slot < 8; slot++) for (const r of readers) workers.push(worker(r));
      await Promise.all(workers);
      // One GET per read is what a read-ahead that follows one position gets here (each reader
      // breaks the others' sequence): 256. Each stream takes two reads of its own to be seen,
      // then GETs of 1, 2, 4 and 8 MiB as its window grows: about 7 for a 16 MiB quarter, a few
      // more where records end. A quarter of a GET per read leaves room for all of that.
      assert.ok(store.ranged.length <= reads / 4, `${store.ranged.length} GETs for ${reads} reads of 256 KiB (${store.ranged.join(" ")})`);
      assert.ok(Math.max(...store.ranged) >= 4 * MiB, `GETs of MiB: the largest is ${Math.max(...store.ranged)} bytes`);
      assert.ok(store.bytes <= DATA + 16 * MiB, `${store.bytes} bytes fetched for ${DATA} read: nothing fetched twice over`);
    });

    test("random reads fetch the lines they read and nothing ahead", async () => {
      const { reader } = await freshReader(256 * MiB);
      let seed = 12345;
      const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
      const blocks = DATA / blockSize;
      const picks = Array.from({ length: 200 }, () => Math.floor(random() * blocks));
      let next = 0;
      const worker = async () => {
        while (next < picks.length) await readChecked(reader, picks[next++] * blockSize, blockSize);
      };
      await Promise.all(Array.from({ length: 8 }, worker));
      assert.ok(store.ranged.length <= picks.length, `${store.ranged.length} GETs for ${picks.length} random reads`);
      assert.ok(
        store.ranged.every((n) => n <= LINE),
        `each GET is one line at most: ${store.ranged.filter((n) => n > LINE).join(" ")}`,
      );
    });

    test("with no cache, a sequential reader fetches what it reads and nothing ahead", async () => {
      const { reader } = await freshReader(0);
      for (let at = 0; at < 16 * MiB; at += READ) await readChecked(reader, at, READ);
      // Lines are 64 KiB and reads 256 KiB on line boundaries of the records: at most a line
      // more per read where a read's blocks straddle a record's lines.
      assert.ok(store.bytes <= 16 * MiB + (16 * MiB / READ) * LINE, `${store.bytes} bytes fetched for 16 MiB read`);
    });
  });

  describe(`${STORE_LABEL[kind]} through the driver's client`, { skip: missing }, () => {
    let store: ObjectStore;
    let dir: string;
    before(async () => {
      assert.ok(stores, "the object stores are up");
      const made = await objectBackendConfig(stores, kind);
      store = made.store;
      dir = made.dir;
    });
    after(() => {
      if (dir) removeDir(dir);
    });

    test("a body given as a list of Buffers is stored whole, in order; an empty list is an empty object", async () => {
      const parts = [randomBytes(12), Buffer.alloc(0), randomBytes(70_000), randomBytes(4096)];
      const put = await store.put("list-body", parts, { ifNoneMatch: true });
      assert.equal(put.size, 70_000 + 12 + 4096);
      assert.deepEqual(await store.get("list-body"), Buffer.concat(parts));
      await assert.rejects(store.put("list-body", [Buffer.from("other")], { ifNoneMatch: true }), PreconditionFailed);
      assert.deepEqual(await store.get("list-body"), Buffer.concat(parts), "the create-only PUT that lost changed nothing");
      assert.equal((await store.put("empty-list", [])).size, 0);
      assert.equal((await store.get("empty-list"))?.length, 0);
    });

    test("a ranged GET's bytes are handed on as they arrive, and are the bytes asked for", async () => {
      const body = randomBytes(3 * MiB);
      await store.put("ranged", body);
      const range = { offset: 123_457, length: 2 * MiB + 5 };
      const seen: number[] = [];
      let early: Buffer | undefined;
      const got = await store.get("ranged", range, {
        immutable: true,
        onData: (b, filled) => {
          seen.push(filled);
          // What is in must already be the right bytes, before the answer is complete.
          if (filled >= 4096 && !early) early = Buffer.from(b.subarray(0, 4096));
        },
      });
      assert.deepEqual(got, body.subarray(range.offset, range.offset + range.length));
      assert.ok(seen.length > 1, `the body came in ${seen.length} pieces`);
      assert.ok(seen.every((n, i) => i === 0 || n > seen[i - 1]), "the bytes in only grow");
      assert.equal(seen[seen.length - 1], range.length);
      assert.deepEqual(early, body.subarray(range.offset, range.offset + 4096));
      assert.equal(await store.get("no-such-object", range, { immutable: true }), undefined, "a missing object is undefined, with or without X-Newest");
    });
  });
}
