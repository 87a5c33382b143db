// `pulumi up` of 50 volumes and 50 snapshots, and `destroy`, through the real engine, against
// the same operations made directly through the library in one process. Median of 3.
//   KINDLING_BENCH_COUNT=50  KINDLING_BENCH_RUNS=3
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { cpus, release, totalmem } from "node:os";
import { join } from "node:path";
import { Backend } from "../provider/library";
import { GiB } from "../provider/util/sizes";
import { tempDir } from "../test/helpers/env";
import { Project, type Resource } from "../test/helpers/pulumi";

const count = Number(process.env.KINDLING_BENCH_COUNT ?? 50);
const runs = Number(process.env.KINDLING_BENCH_RUNS ?? 3);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function seconds(work: () => Promise<unknown> | unknown): Promise<number> {
  const start = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

async function library(pool: string): Promise<{ up: number; down: number }> {
  const backend = await Backend.open({ name: "bench", driver: "file", path: pool });
  try {
    const up = await seconds(async () => {
      const volumes = await Promise.all(Array.from({ length: count }, (_, i) => backend.createVolume({ sizeGiB: 1, name: `v${i}` })));
      await Promise.all(volumes.map((v) => v.createSnapshot({ name: `s${v.name}` })));
    });
    const down = await seconds(async () => {
      await Promise.all((await backend.snapshots()).map((s) => s.delete()));
      await Promise.all((await backend.volumes()).map((v) => v.delete()));
    });
    return { up, down };
  } finally {
    await backend.close();
  }
}

async function engine(pool: string): Promise<{ up: number; down: number }> {
  const project = new Project({ name: "bench", driver: "file", path: pool }, "kindling-bench");
  try {
    project.init();
    const resources: Resource[] = [];
    for (let i = 0; i < count; i++) {
      resources.push({ type: "Volume", name: `v${i}`, args: { sizeGiB: 1 } });
      resources.push({ type: "Snapshot", name: `s${i}`, args: { volumeId: `@v${i}.volumeId` } });
    }
    project.program(resources);
    const up = await seconds(() => project.up());
    const down = await seconds(() => project.ok(["destroy", "--yes", "--skip-preview"]));
    return { up, down };
  } finally {
    rmSync(project.dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const dir = tempDir("kindling-bench-");
  const lib: Array<{ up: number; down: number }> = [];
  const eng: Array<{ up: number; down: number }> = [];
  try {
    for (let i = 0; i < runs; i++) {
      // Alternate, so whatever else the machine does weighs on both alike.
      lib.push(await library(join(dir, `lib-${i}`)));
      eng.push(await engine(join(dir, `eng-${i}`)));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const row = (what: string, l: number, e: number) => `| ${what} | ${l.toFixed(2)} | ${e.toFixed(2)} | ${(e / l).toFixed(1)} |`;
  const table = [
    `Machine: ${cpus().length} cores, ${Math.round(totalmem() / GiB)} GiB, Linux ${release()}; ${new Date().toISOString().slice(0, 10)}; ${count} volumes + ${count} snapshots; median of ${runs}.`,
    "",
    "| operation | library, one process (s) | pulumi up / destroy (s) | pulumi / library |",
    "|---|---|---|---|",
    row("create all", median(lib.map((r) => r.up)), median(eng.map((r) => r.up))),
    row("delete all", median(lib.map((r) => r.down)), median(eng.map((r) => r.down))),
  ].join("\n");
  console.log(table);
  mkdirSync(join(__dirname, "..", "..", "bench", "results"), { recursive: true });
  writeFileSync(join(__dirname, "..", "..", "bench", "results", "pulumi-vs-library.md"), `${table}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
