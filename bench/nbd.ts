// kindling's NBD server against nbdkit (file plugin) and qemu-nbd, serving the same 1 GiB
// file of random data on 127.0.0.1: fio's nbd engine (1 MiB sequential read and write, 4 KiB
// random read and write, iodepth 16) and nbdcopy both ways. Servers alternate within each run;
// median of KINDLING_BENCH_RUNS (3). Ratios are to nbdkit.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, openSync, readFileSync, rmSync, writeFileSync, writeSync, closeSync } from "node:fs";
import { cpus, release, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { GiB, MiB } from "../provider/util/sizes";
import { freePort } from "../test/helpers/daemon";
import { tempDir } from "../test/helpers/env";

const runs = Number(process.env.KINDLING_BENCH_RUNS ?? 3);
const seconds = Number(process.env.KINDLING_BENCH_SECONDS ?? 5);
const ROOT = resolve(__dirname, "..", "..");
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

interface Server { name: string; uri: string; child: ChildProcess; stop(): Promise<number> }

function sh(command: string, args: string[]): string {
  const r = spawnSync(command, args, { encoding: "utf8", maxBuffer: 64 * MiB });
  if (r.status !== 0) throw new Error(`${command} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

async function waitFor(uri: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (spawnSync("nbdinfo", ["--size", uri]).status === 0) return;
    await sleep(100);
  }
  throw new Error(`no server at ${uri}`);
}

/** Peak resident memory of a process, from /proc (kB). */
function peakRss(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

async function start(name: string, dir: string, file: string): Promise<Server> {
  const port = await freePort();
  let child: ChildProcess;
  let uri = `nbd://127.0.0.1:${port}`;
  if (name === "kindling") {
    const config = join(dir, "kindling.json");
    child = spawn(join(ROOT, "bin", "kindling"), ["--config", config, "nbd", "serve", "--listen", `127.0.0.1:${port}`], { stdio: "ignore" });
    uri += "/bench";
  } else if (name === "nbdkit") {
    child = spawn("nbdkit", ["-f", "-i", "127.0.0.1", "-p", String(port), "file", file], { stdio: "ignore" });
  } else {
    child = spawn("qemu-nbd", ["-f", "raw", "--persistent", "--cache=writeback", "--aio=threads", "-e", "8", "-b", "127.0.0.1", "-p", String(port), file], { stdio: "ignore" });
  }
  await waitFor(uri);
  return {
    name,
    uri,
    child,
    async stop() {
      const rss = peakRss(child.pid as number);
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
      return rss;
    },
  };
}

function fio(uri: string, rw: string, bs: string): number {
  const out = sh("fio", [
    "--name=b", "--ioengine=nbd", `--uri=${uri}`, `--rw=${rw}`, `--bs=${bs}`, "--iodepth=16", "--size=1G",
    `--runtime=${seconds}`, "--time_based", "--output-format=json",
  ]);
  const job = JSON.parse(out.slice(out.indexOf("{"))).jobs[0];
  const side = rw.includes("read") ? job.read : job.write;
  return bs === "4k" ? side.iops : side.bw / 1024; // IOPS, or MiB/s
}

function nbdcopy(from: string, to: string, bytes: number): number {
  const start = process.hrtime.bigint();
  sh("nbdcopy", [from, to]);
  return bytes / MiB / (Number(process.hrtime.bigint() - start) / 1e9);
}

async function main(): Promise<void> {
  const dir = tempDir("kindling-nbd-bench-");
  try {
    // A kindling volume, filled with random data: all three servers serve this same file.
    const config = join(dir, "kindling.json");
    writeFileSync(config, JSON.stringify({ backends: { b: { driver: "file", path: join(dir, "volumes") } } }));
    const kindling = (...args: string[]) => JSON.parse(sh(join(ROOT, "bin", "kindling"), ["--config", config, "--json", ...args]));
    const volume = kindling("volume", "create", "bench", "--size", "1");
    kindling("connect", "bench", "--protocol", "nbd");
    const fd = openSync(volume.location, "r+");
    for (let at = 0; at < GiB; at += 16 * MiB) writeSync(fd, randomBytes(16 * MiB), 0, 16 * MiB, at);
    closeSync(fd);
    const source = join(dir, "source.img");
    writeFileSync(source, randomBytes(256 * MiB));

    const tests = ["seq read 1M (MiB/s)", "seq write 1M (MiB/s)", "4k randread (IOPS)", "4k randwrite (IOPS)", "nbdcopy read (MiB/s)", "nbdcopy write (MiB/s)"];
    const results: Record<string, Record<string, number[]>> = {};
    const rss: Record<string, number[]> = {};
    for (let run = 0; run < runs; run++) {
      for (const name of ["kindling", "nbdkit", "qemu-nbd"]) {
        const server = await start(name, dir, volume.location);
        const r = (results[name] ??= Object.fromEntries(tests.map((t) => [t, []])));
        r[tests[0]].push(fio(server.uri, "read", "1M"));
        r[tests[1]].push(fio(server.uri, "write", "1M"));
        r[tests[2]].push(fio(server.uri, "randread", "4k"));
        r[tests[3]].push(fio(server.uri, "randwrite", "4k"));
        r[tests[4]].push(nbdcopy(server.uri, "null:", GiB));
        r[tests[5]].push(nbdcopy(source, server.uri, 256 * MiB));
        (rss[name] ??= []).push(await server.stop());
      }
    }
    const lines = [
      `Machine: ${cpus().length} cores, ${Math.round(totalmem() / GiB)} GiB, Linux ${release()}; ${new Date().toISOString().slice(0, 10)}; median of ${runs}; fio runs of ${seconds} s, iodepth 16.`,
      "",
      "| test | kindling | nbdkit file | qemu-nbd | kindling / nbdkit |",
      "|---|---|---|---|---|",
      ...tests.map((t) => {
        const [k, n, q] = ["kindling", "nbdkit", "qemu-nbd"].map((s) => median(results[s][t]));
        return `| ${t} | ${k.toFixed(0)} | ${n.toFixed(0)} | ${q.toFixed(0)} | ${(k / n).toFixed(2)} |`;
      }),
      `| peak RSS (MiB) | ${(median(rss.kindling) / 1024).toFixed(0)} | ${(median(rss.nbdkit) / 1024).toFixed(0)} | ${(median(rss["qemu-nbd"]) / 1024).toFixed(0)} | |`,
    ];
    const table = lines.join("\n");
    console.log(table);
    mkdirSync(join(ROOT, "bench", "results"), { recursive: true });
    writeFileSync(join(ROOT, "bench", "results", "nbd.md"), `${table}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
