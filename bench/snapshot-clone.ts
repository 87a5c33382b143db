// Snapshot and clone time against volume size, on reflink XFS and on ext4, with coreutils
// `cp --reflink=auto --sparse=always` of the same file as the named peer, alternated in one run.
//   KINDLING_BENCH_SIZES=1,32 (GiB)   KINDLING_BENCH_RUNS=3   KINDLING_BENCH_DIR=/var/tmp
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { cpus, release, totalmem } from "node:os";
import { join } from "node:path";
import { Backend, type Volume } from "../provider/library";
import { MemoryPersistence } from "../provider/persistence/memory";
import { GiB, MiB } from "../provider/util/sizes";
import { makeXfs } from "./xfs";

const sizes = (process.env.KINDLING_BENCH_SIZES ?? "1,32").split(",").map(Number);
const runs = Number(process.env.KINDLING_BENCH_RUNS ?? 3);
const base = process.env.KINDLING_BENCH_DIR ?? "/var/tmp";

function sh(command: string, args: string[]): string {
  return execFileSync(command, args, { stdio: ["ignore", "pipe", "inherit"] }).toString().trim();
}

async function timed(work: () => Promise<unknown> | unknown): Promise<number> {
  sh("sync", []);
  const start = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Fills the volume with data no filesystem can dedupe or skip: a stamp in every 4 KiB. */
async function fill(volume: Volume): Promise<void> {
  const device = await volume.open();
  const chunk = Buffer.alloc(4 * MiB);
  for (let at = 0; at < device.size; at += chunk.length) {
    for (let i = 0; i < chunk.length; i += 4096) chunk.writeDoubleLE(at + i + 1, i);
    await device.pwrite(chunk, at);
  }
  await device.flush();
  await device.close();
}

interface Row { fs: string; sizeGiB: number; snapshot: number; clone: number; cp: number }

async function measure(fs: string, pool: string, sizeGiB: number): Promise<Row> {
  const backend = await Backend.open({ name: "bench", driver: "file", path: pool }, { persistence: new MemoryPersistence() });
  try {
    const volume = await backend.createVolume({ sizeGiB });
    await fill(volume);
    const snap: number[] = [], clone: number[] = [], cp: number[] = [];
    for (let i = 0; i < runs; i++) {
      // Peer and ours alternate, so load from elsewhere on the machine hits both alike.
      const copy = join(pool, "peer-copy");
      cp.push(await timed(() => sh("cp", ["--reflink=auto", "--sparse=always", volume.location as string, copy])));
      unlinkSync(copy);
      let s!: Awaited<ReturnType<Volume["createSnapshot"]>>;
      snap.push(await timed(async () => (s = await volume.createSnapshot())));
      await s.delete();
      let c!: Volume;
      clone.push(await timed(async () => (c = await volume.clone())));
      await c.delete();
    }
    await volume.delete();
    return { fs, sizeGiB, snapshot: median(snap), clone: median(clone), cp: median(cp) };
  } finally {
    await backend.close();
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(base, "kindling-bench-"));
  const rows: Row[] = [];
  try {
    const xfs = makeXfs(dir, Math.max(...sizes) + 4);
    try {
      for (const size of sizes) rows.push(await measure("xfs (reflink)", xfs.pool, size));
    } finally {
      xfs.remove();
    }
    for (const size of sizes) rows.push(await measure("ext4", join(dir, "ext4"), size));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const s = (x: number) => x.toFixed(3);
  const lines = [
    `Machine: ${cpus().length} cores, ${Math.round(totalmem() / GiB)} GiB, Linux ${release()}; ${new Date().toISOString().slice(0, 10)}; median of ${runs}.`,
    "",
    "| filesystem | volume | kindling snapshot (s) | kindling clone (s) | cp --reflink=auto (s) | snapshot / cp | clone / cp |",
    "|---|---|---|---|---|---|---|",
    ...rows.map((r) => `| ${r.fs} | ${r.sizeGiB} GiB | ${s(r.snapshot)} | ${s(r.clone)} | ${s(r.cp)} | ${(r.snapshot / r.cp).toFixed(2)} | ${(r.clone / r.cp).toFixed(2)} |`),
    "",
    "| filesystem | snapshot time, largest / smallest volume | clone time, largest / smallest |",
    "|---|---|---|",
    ...[...new Set(rows.map((r) => r.fs))].map((fs) => {
      const of = rows.filter((r) => r.fs === fs);
      const small = of[0], big = of[of.length - 1];
      return `| ${fs} (${big.sizeGiB} GiB / ${small.sizeGiB} GiB) | ${(big.snapshot / small.snapshot).toFixed(2)} | ${(big.clone / small.clone).toFixed(2)} |`;
    }),
  ];
  const table = lines.join("\n");
  console.log(table);
  mkdirSync(join(__dirname, "..", "..", "bench", "results"), { recursive: true });
  writeFileSync(join(__dirname, "..", "..", "bench", "results", "snapshot-clone.md"), `${table}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
