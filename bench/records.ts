// What keeping the records costs: volume operations through the library (SQLite records beside
// the data, each change a compare-and-set, each operation under a lease) against the bare file
// operation each one comes down to, in the same run, alternating. Median of 3.
//   KINDLING_BENCH_COUNT=100  KINDLING_BENCH_RUNS=3
import { closeSync, ftruncateSync, mkdirSync, openSync, truncateSync, unlinkSync, writeFileSync } from "node:fs";
import { cpus, release, totalmem } from "node:os";
import { join } from "node:path";
import { Backend, type Volume } from "../provider/library";
import type { Persistence } from "../provider/persistence/contract";
import { SqlitePersistence } from "../provider/persistence/sqlite";
import { GiB } from "../provider/util/sizes";
import { removeDir, tempDir } from "../test/helpers/env";

const count = Number(process.env.KINDLING_BENCH_COUNT ?? 100);
const runs = Number(process.env.KINDLING_BENCH_RUNS ?? 3);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Milliseconds per call of `work`, over `count` calls one after another. */
async function perCall(work: (i: number) => Promise<unknown> | unknown): Promise<number> {
  const start = process.hrtime.bigint();
  for (let i = 0; i < count; i++) await work(i);
  return Number(process.hrtime.bigint() - start) / 1e6 / count;
}

/** The store's writes, counted: how many compare-and-sets one operation makes. */
function counting(store: Persistence): { store: Persistence; writes: () => number } {
  let writes = 0;
  const proxy = new Proxy(store, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (property !== "compareAndSetRecord" && property !== "compareAndDeleteRecord") return typeof value === "function" ? value.bind(target) : value;
      return (...args: unknown[]) => {
        writes++;
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store: proxy, writes: () => writes };
}

type Row = { operation: string; peer: string; ours: number; bare: number; writes: number };

async function once(dir: string): Promise<Row[]> {
  const pool = join(dir, "volumes");
  const bare = join(dir, "bare");
  mkdirSync(bare, { recursive: true });
  // The store the file backend keeps beside its data by default, opened here so it can be counted.
  const { store, writes } = counting(new SqlitePersistence(join(pool, ".kindling", "kindling.db")));
  const backend = await Backend.open({ name: "bench", driver: "file", path: pool }, { persistence: store });
  const rows: Row[] = [];
  const measure = async (operation: string, peer: string, ours: (i: number) => Promise<unknown>, theirs: (i: number) => unknown) => {
    const before = writes();
    const o = await perCall(ours);
    const w = (writes() - before) / count;
    const b = await perCall(theirs);
    rows.push({ operation, peer, ours: o, bare: b, writes: w });
  };
  try {
    const volumes: Volume[] = [];
    const file = (i: number) => join(bare, `f${i}`);
    await measure("create 1 GiB", "open(O_EXCL) + ftruncate", async (i) => volumes.push(await backend.createVolume({ sizeGiB: 1, name: `v${i}` })), (i) => {
      const fd = openSync(file(i), "wx", 0o600);
      ftruncateSync(fd, GiB);
      closeSync(fd);
    });
    await measure("extend to 2 GiB", "truncate", (i) => volumes[i].extend(2), (i) => truncateSync(file(i), 2 * GiB));
    await measure("update metadata", "(none: records only)", (i) => volumes[i].update({ metadata: { n: String(i) } }), () => undefined);
    await measure("delete", "unlink", (i) => volumes[i].delete(), (i) => unlinkSync(file(i)));
  } finally {
    await backend.close();
    await store.close();
  }
  return rows;
}

async function main(): Promise<void> {
  const results: Row[][] = [];
  for (let run = 0; run < runs; run++) {
    const dir = tempDir("kindling-bench-records-");
    try {
      results.push(await once(dir));
    } finally {
      removeDir(dir);
    }
  }
  const lines = [
    `Machine: ${cpus().length} cores, ${Math.round(totalmem() / GiB)} GiB, Linux ${release().split("-")[0]}; ${new Date().toISOString().slice(0, 10)}; ${count} operations one after another; median of ${runs}.`,
    "",
    "| operation | kindling (ms) | record writes | peer | peer (ms) | kindling / peer | kindling − peer (ms) |",
    "|---|---|---|---|---|---|---|",
  ];
  for (let i = 0; i < results[0].length; i++) {
    const ours = median(results.map((r) => r[i].ours));
    const bare = median(results.map((r) => r[i].bare));
    const { operation, peer, writes } = results[0][i];
    const ratio = bare > 0 ? (ours / bare).toFixed(0) : "—";
    lines.push(`| ${operation} | ${ours.toFixed(2)} | ${writes} | ${peer} | ${bare.toFixed(3)} | ${ratio} | ${(ours - bare).toFixed(2)} |`);
  }
  const table = lines.join("\n");
  process.stdout.write(`${table}\n`);
  mkdirSync(join(__dirname, "..", "..", "bench", "results"), { recursive: true });
  writeFileSync(join(__dirname, "..", "..", "bench", "results", "records.md"), `${table}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
