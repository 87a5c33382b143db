// PUT and GET latency and throughput against object size and requests in flight, on the two
// stores the object driver targets as they run on this machine: radosgw's S3 API (a throwaway
// single-node Ceph 16 cluster, one bluestore OSD) and a Swift all-in-one (Debian's swift 2.30,
// one replica, every server one process). What it is for: the driver's segment size and how many
// requests it keeps in flight. Plain HTTP from Node (fetch, keep-alive; S3 signed by SigV4 with
// UNSIGNED-PAYLOAD), as the driver will do it, bodies from memory. The two stores alternate,
// size by size, so whatever else the machine does weighs on both alike; medians of the runs.
//   KINDLING_BENCH_SIZES=4K,64K,1M,8M,32M   KINDLING_BENCH_CONCURRENCY=1,4   KINDLING_BENCH_RUNS=3
//   KINDLING_BENCH_MIB=128  (about that much data per size, concurrency and run; 8-256 requests)
import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release, totalmem } from "node:os";
import { join } from "node:path";
import { GiB, MiB } from "../provider/util/sizes";
import { RadosGateway, SwiftAio, s3, swift, swiftAuth, type SwiftSession } from "../test/helpers/objectstores";

const KiB = 1024;
const parseSize = (s: string) => Number(s.slice(0, -1)) * (s.endsWith("M") ? MiB : KiB);
const sizeNames = (process.env.KINDLING_BENCH_SIZES ?? "4K,64K,1M,8M,32M").split(",");
const concurrencies = (process.env.KINDLING_BENCH_CONCURRENCY ?? "1,4").split(",").map(Number);
const runs = Number(process.env.KINDLING_BENCH_RUNS ?? 3);
const target = Number(process.env.KINDLING_BENCH_MIB ?? 128) * MiB;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** One store as the bench drives it: a PUT and a GET of a key, each resolving when the whole answer is in. */
interface Store {
  name: string;
  put(key: string, body: Buffer): Promise<void>;
  get(key: string, size: number): Promise<void>;
  remove(key: string): Promise<void>;
}

async function expect(r: Response, ok: number[], what: string): Promise<Buffer> {
  const body = Buffer.from(await r.arrayBuffer());
  if (!ok.includes(r.status)) throw new Error(`${what}: ${r.status} ${body.toString().slice(0, 200)}`);
  return body;
}

async function radosStore(rgw: RadosGateway): Promise<Store> {
  const bucket = "kindling-bench";
  await expect(await s3(rgw, "PUT", `/${bucket}`), [200], "create bucket");
  return {
    name: "radosgw S3",
    put: async (key, body) => void (await expect(await s3(rgw, "PUT", `/${bucket}/${key}`, { body }), [200], `PUT ${key}`)),
    get: async (key, size) => {
      const body = await expect(await s3(rgw, "GET", `/${bucket}/${key}`), [200], `GET ${key}`);
      if (body.length !== size) throw new Error(`GET ${key}: ${body.length} bytes, not ${size}`);
    },
    remove: async (key) => void (await expect(await s3(rgw, "DELETE", `/${bucket}/${key}`), [204], `DELETE ${key}`)),
  };
}

async function swiftStore(aio: SwiftAio): Promise<Store> {
  const container = "kindling-bench";
  const session: SwiftSession = await swiftAuth(aio);
  await expect(await swift(session, "PUT", container), [201, 202], "create container");
  return {
    name: "Swift all-in-one",
    put: async (key, body) => void (await expect(await swift(session, "PUT", `${container}/${key}`, { body }), [201], `PUT ${key}`)),
    get: async (key, size) => {
      const body = await expect(await swift(session, "GET", `${container}/${key}`), [200], `GET ${key}`);
      if (body.length !== size) throw new Error(`GET ${key}: ${body.length} bytes, not ${size}`);
    },
    remove: async (key) => void (await expect(await swift(session, "DELETE", `${container}/${key}`), [204], `DELETE ${key}`)),
  };
}

interface Sample {
  /** Median time of one request (ms). */
  latency: number;
  mibPerSecond: number;
  requestsPerSecond: number;
}

/** `requests` operations, `concurrency` at a time (each worker takes the next index), timed one by one and as a whole. */
async function measure(requests: number, concurrency: number, op: (i: number) => Promise<void>): Promise<{ latencies: number[]; seconds: number }> {
  const latencies: number[] = [];
  let next = 0;
  const start = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < requests; i = next++) {
        const t0 = process.hrtime.bigint();
        await op(i);
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
    }),
  );
  return { latencies, seconds: Number(process.hrtime.bigint() - start) / 1e9 };
}

/** PUT then GET of `requests` distinct keys of `size` bytes, then their DELETE (untimed, so the stores do not fill up). */
async function once(store: Store, size: number, concurrency: number, body: Buffer): Promise<{ put: Sample; get: Sample }> {
  const requests = Math.min(256, Math.max(8, Math.round(target / size)));
  const key = (i: number) => `bench/${size}/${concurrency}/${i}`;
  const sample = ({ latencies, seconds }: { latencies: number[]; seconds: number }): Sample => ({
    latency: median(latencies),
    mibPerSecond: (requests * size) / MiB / seconds,
    requestsPerSecond: requests / seconds,
  });
  const put = sample(await measure(requests, concurrency, (i) => store.put(key(i), body)));
  const get = sample(await measure(requests, concurrency, (i) => store.get(key(i), size)));
  await measure(requests, 4, (i) => store.remove(key(i)));
  return { put, get };
}

async function main(): Promise<void> {
  const load = loadavg()[0];
  const started = Date.now();
  const rgw = await RadosGateway.start();
  let aio: SwiftAio | undefined;
  try {
    aio = await SwiftAio.start();
    const stores = [await radosStore(rgw), await swiftStore(aio)];
    const bodies = new Map(sizeNames.map((name) => [name, randomBytes(parseSize(name))]));
    // One untimed round first: connections open, the bucket's and container's first objects made.
    for (const store of stores) await once(store, 64 * KiB, 4, randomBytes(64 * KiB));

    const results = new Map<string, { put: Sample; get: Sample }[]>();
    const id = (store: string, size: string, c: number) => `${store}|${size}|${c}`;
    for (let run = 0; run < runs; run++) {
      for (const size of sizeNames) {
        for (const c of concurrencies) {
          for (const store of stores) {
            const r = await once(store, parseSize(size), c, bodies.get(size) as Buffer);
            const key = id(store.name, size, c);
            results.set(key, [...(results.get(key) ?? []), r]);
            process.stderr.write(
              `run ${run + 1} ${store.name} ${size} x${c}: PUT ${r.put.latency.toFixed(1)} ms ${r.put.mibPerSecond.toFixed(1)} MiB/s, GET ${r.get.latency.toFixed(1)} ms ${r.get.mibPerSecond.toFixed(1)} MiB/s\n`,
            );
          }
        }
      }
    }

    const lines = [
      `Machine: ${cpus().length} cores, ${Math.round(totalmem() / GiB)} GiB, Linux ${release().split("-")[0]}; ${new Date().toISOString().slice(0, 10)}; load ${load.toFixed(1)} at start; median of ${runs}; ${Math.round((Date.now() - started) / 1000)} s in all.`,
      "",
      "| store | size | in flight | PUT latency (ms) | PUT MiB/s | PUT req/s | GET latency (ms) | GET MiB/s | GET req/s |",
      "|---|---|---|---|---|---|---|---|---|",
    ];
    const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
    for (const store of stores) {
      for (const size of sizeNames) {
        for (const c of concurrencies) {
          const rs = results.get(id(store.name, size, c)) ?? [];
          const m = (pick: (r: { put: Sample; get: Sample }) => number) => fmt(median(rs.map(pick)));
          lines.push(
            `| ${store.name} | ${size.replace("K", " KiB").replace("M", " MiB")} | ${c} | ${m((r) => r.put.latency)} | ${m((r) => r.put.mibPerSecond)} | ${m((r) => r.put.requestsPerSecond)} | ${m((r) => r.get.latency)} | ${m((r) => r.get.mibPerSecond)} | ${m((r) => r.get.requestsPerSecond)} |`,
          );
        }
      }
    }
    const table = lines.join("\n");
    process.stdout.write(`${table}\n`);
    const resultsDir = join(__dirname, "..", "..", "bench", "results");
    mkdirSync(resultsDir, { recursive: true });
    writeFileSync(join(resultsDir, "object-store.md"), `${table}\n`);
  } finally {
    aio?.stop();
    rgw.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
