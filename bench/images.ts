// Images into and out of volumes on the file backend, against what a user would script with the
// usual tools, in one run, ours and the peer alternating, median of KINDLING_BENCH_RUNS (3):
//   raw-in    an http URL into a new volume: kindling (the library, the URL with its sha256,
//             every byte hashed and inspected) | curl URL | nbdcopy - to nbdkit's file plugin
//             on a fresh file (nothing checked)
//   qcow2-in  a local qcow2 file into a new volume: kindling | qemu-img convert -f qcow2 -O raw
//             -n --target-is-zero into a fresh file
//   raw-out   a volume into a new raw Glance image: kindling's volume.copyToImage | nbdkit's
//             file plugin (read-only) | nbdcopy - | curl -T - to Glance's upload (after the
//             same image create), nothing checked afterwards
//   cache     a new volume from an image already in the image cache, against a miss, at 1 GiB
//             and KINDLING_BENCH_CACHE_GIB (32): a hit should not grow with the size
// The image: KINDLING_BENCH_IMAGE_GIB (1) GiB, three quarters random data, a quarter zeroes,
// served by python3's http.server in a process of its own (the same for both).
//   KINDLING_BENCH_ROWS=raw-in,qcow2-in,raw-out,cache   KINDLING_BENCH_DIR=/var/tmp
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash, randomFillSync } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, rmSync, writeSync } from "node:fs";
import { cpus, release, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Backend, type Volume } from "../provider/library";
import { glanceImageService, type GlanceImageService } from "../provider/images/glance";
import { HttpSource } from "../provider/images/sources/http";
import { FileSource } from "../provider/images/sources/file";
import { hexDigest } from "../provider/images/digest";
import { MemoryPersistence } from "../provider/persistence/memory";
import { GiB, MiB } from "../provider/util/sizes";
import { freePort } from "../test/helpers/daemon";
import { makeXfs } from "./xfs";

const env = process.env;
const runs = Number(env.KINDLING_BENCH_RUNS ?? 3);
const imageGiB = Number(env.KINDLING_BENCH_IMAGE_GIB ?? 1);
const cacheGiB = Number(env.KINDLING_BENCH_CACHE_GIB ?? 32);
const base = env.KINDLING_BENCH_DIR ?? "/var/tmp";
const ROWS = (env.KINDLING_BENCH_ROWS ?? "raw-in,qcow2-in,raw-out,cache").split(",");
const ROOT = resolve(__dirname, "..", "..");
const PROJECT = "99887766554433221100";
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function sh(command: string, args: string[]): string {
  const r = spawnSync(command, args, { encoding: "utf8", maxBuffer: 64 * MiB });
  if (r.status !== 0) throw new Error(`${command} ${args.join(" ")} failed (${r.status}): ${r.stderr}`);
  return r.stdout.trim();
}

async function timed(work: () => Promise<unknown>): Promise<number> {
  sh("sync", []);
  const start = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** Waits for a pipeline of processes; when one fails the others are killed, so none hangs on a pipe. */
async function pipeline(children: Array<[ChildProcess, string]>): Promise<void> {
  try {
    await Promise.all(children.map(([c, what]) => exited(c, what)));
  } catch (err) {
    for (const [c] of children) if (c.exitCode === null) c.kill("SIGKILL");
    throw err;
  }
}

/** Resolves when the process exits 0; rejects with its stderr otherwise. */
function exited(child: ChildProcess, what: string): Promise<void> {
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  return new Promise((ok, fail) => child.on("exit", (code, signal) => (code === 0 ? ok() : fail(new Error(`${what} failed (${code ?? signal}): ${stderr}`)))));
}

/** Three quarters random data (incompressible, no zero blocks), a quarter zeroes in the middle. */
function makeImage(path: string, bytes: number): string {
  const fd = openSync(path, "w");
  const hash = createHash("sha256");
  const chunk = Buffer.alloc(16 * MiB);
  const zero = Buffer.alloc(16 * MiB);
  try {
    for (let at = 0; at < bytes; at += chunk.length) {
      const inZeroes = at >= bytes / 2 && at < (bytes * 3) / 4;
      const b = inZeroes ? zero : randomFillSync(chunk);
      writeSync(fd, b);
      hash.update(b);
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest("hex");
}

/** A file of `bytes` whose first `dataBytes` are random and the rest a hole; its sha256. */
function sparseImage(path: string, bytes: number, dataBytes: number): string {
  const fd = openSync(path, "w");
  const hash = createHash("sha256");
  const chunk = Buffer.alloc(16 * MiB);
  try {
    for (let at = 0; at < dataBytes; at += chunk.length) {
      writeSync(fd, randomFillSync(chunk));
      hash.update(chunk);
    }
  } finally {
    closeSync(fd);
  }
  sh("truncate", ["-s", String(bytes), path]);
  chunk.fill(0);
  for (let at = dataBytes; at < bytes; at += chunk.length) hash.update(chunk);
  return hash.digest("hex");
}

/** nbdkit's file plugin on `file`, on a unix socket; resolves once it accepts (its pid file is written then). */
async function nbdkit(file: string, socket: string, readOnly: boolean): Promise<ChildProcess> {
  const pidFile = `${socket}.pid`;
  rmSync(pidFile, { force: true });
  rmSync(socket, { force: true });
  const child = spawn("nbdkit", ["-f", "-P", pidFile, ...(readOnly ? ["-r"] : []), "-U", socket, "file", file], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  for (let i = 0; i < 400 && !existsSync(pidFile) && child.exitCode === null; i++) await sleep(25);
  if (!existsSync(pidFile)) throw new Error(`nbdkit did not start: ${stderr}`);
  return child;
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const gone = new Promise((ok) => child.once("exit", ok));
  child.kill("SIGTERM");
  await gone;
}

interface Result { row: string; ours: number; peer: number; peerName: string; note?: string }

async function main(): Promise<void> {
  const dir = join(base, `kindling-bench-images-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  const www = join(dir, "www");
  mkdirSync(www);
  const bytes = imageGiB * GiB;
  const rawPath = join(www, "disk.raw");
  const sha256 = makeImage(rawPath, bytes);
  const port = await freePort();
  const web = spawn("python3", ["-m", "http.server", String(port), "--bind", "127.0.0.1", "--directory", www], { stdio: "ignore" });
  const url = `http://127.0.0.1:${port}/disk.raw`;
  let glance: { dir: string; endpoint: string } | undefined;
  let client: GlanceImageService | undefined;
  const backend = await Backend.open({ name: "bench", driver: "file", path: join(dir, "volumes") }, { persistence: new MemoryPersistence() });
  const results: Result[] = [];
  try {
    for (let i = 0; i < 100; i++) {
      if (spawnSync("curl", ["-sf", "-o", "/dev/null", "-r", "0-0", url]).status === 0) break;
      await sleep(50);
    }

    if (ROWS.includes("raw-in")) {
      const ours: number[] = [];
      const peer: number[] = [];
      for (let i = 0; i < runs; i++) {
        const target = join(dir, "peer.raw");
        sh("truncate", ["-s", String(bytes), target]);
        const socket = join(dir, "peer.sock");
        const server = await nbdkit(target, socket, false);
        peer.push(await timed(async () => {
          const curl = spawn("curl", ["-sf", url], { stdio: ["ignore", "pipe", "pipe"] });
          const copy = spawn("nbdcopy", ["--target-is-zero", "-", `nbd+unix:///?socket=${socket}`], { stdio: [curl.stdout, "ignore", "pipe"] });
          await pipeline([[curl, "curl"], [copy, "nbdcopy"]]);
        }));
        await stop(server);
        rmSync(target);
        let volume!: Volume;
        ours.push(await timed(async () => {
          volume = await backend.createVolumeFromImage(new HttpSource({ url, expect: [hexDigest("sha256", sha256, "bench", "image")] }), { name: `raw-in-${i}` });
        }));
        await volume.delete();
      }
      results.push({ row: `raw image (${imageGiB} GiB) from http into a new volume`, ours: median(ours), peer: median(peer), peerName: "curl \\| nbdcopy to nbdkit file" });
    }

    if (ROWS.includes("qcow2-in")) {
      const qcow2 = join(dir, "disk.qcow2");
      sh("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", rawPath, qcow2]);
      const ours: number[] = [];
      const peer: number[] = [];
      for (let i = 0; i < runs; i++) {
        const target = join(dir, "peer.raw");
        sh("truncate", ["-s", String(bytes), target]);
        peer.push(await timed(async () => void sh("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", "-n", "--target-is-zero", qcow2, target])));
        rmSync(target);
        let volume!: Volume;
        try {
          ours.push(await timed(async () => {
            volume = await backend.createVolumeFromImage(new FileSource(qcow2, []), { name: `qcow2-in-${i}`, allowUnverified: true });
          }));
        } catch (err) {
          results.push({ row: `qcow2 image (${imageGiB} GiB of data) from a file into a new volume`, ours: NaN, peer: median(peer), peerName: "qemu-img convert", note: (err as Error).message.slice(0, 120) });
          break;
        }
        await volume.delete();
      }
      if (ours.length === runs) results.push({ row: `qcow2 image (${imageGiB} GiB) from a file into a new volume`, ours: median(ours), peer: median(peer), peerName: "qemu-img convert -n --target-is-zero" });
    }

    if (ROWS.includes("raw-out")) {
      const gport = await freePort();
      const gdir = join(dir, "glance");
      const up = sh(join(ROOT, "scripts", "glance", "up.sh"), [gdir, String(gport)]);
      const endpoint = /^KINDLING_GLANCE_ENDPOINT=(.*)$/m.exec(up)?.[1] as string;
      glance = { dir: gdir, endpoint };
      client = glanceImageService("glance", { type: "glance", endpoint, auth: { type: "noauth", projectId: PROJECT, userId: "bench" } });
      const volume = await backend.createVolumeFromImage(new HttpSource({ url, expect: [hexDigest("sha256", sha256, "bench", "image")] }), { name: "raw-out" });
      const file = volume.location as string;
      const ours: number[] = [];
      const peer: number[] = [];
      for (let i = 0; i < runs; i++) {
        let peerId = "";
        peer.push(await timed(async () => {
          const made = await (client as GlanceImageService).create({ name: `peer-${i}`, diskFormat: "raw" });
          peerId = made.id;
          const socket = join(dir, "out.sock");
          const server = await nbdkit(file, socket, true);
          try {
            const copy = spawn("nbdcopy", [`nbd+unix:///?socket=${socket}`, "-"], { stdio: ["ignore", "pipe", "pipe"] });
            const headers = ["Content-Type: application/octet-stream", "X-Identity-Status: Confirmed", `X-Project-Id: ${PROJECT}`, `X-Tenant-Id: ${PROJECT}`, "X-User-Id: bench", "X-Roles: admin,member,reader"];
            const curl = spawn("curl", ["-sS", "--fail-with-body", "-T", "-", "-X", "PUT", ...headers.flatMap((h) => ["-H", h]), `${endpoint}/v2/images/${made.id}/file`], { stdio: [copy.stdout, "pipe", "pipe"] });
            await pipeline([[copy, "nbdcopy"], [curl, "curl"]]);
          } finally {
            await stop(server);
          }
        }));
        await client.delete(peerId);
        let imageId = "";
        ours.push(await timed(async () => {
          imageId = (await volume.copyToImage(client as GlanceImageService, { name: `ours-${i}` })).image.id;
        }));
        await client.delete(imageId);
      }
      await volume.delete();
      results.push({ row: `raw volume (${imageGiB} GiB) into a new Glance image`, ours: median(ours), peer: median(peer), peerName: "nbdkit file \\| nbdcopy \\| curl -T" });
    }

    if (ROWS.includes("cache")) {
      // On a reflink filesystem (XFS on a loop device), where a hit is a reflink of the cached volume.
      const xfs = makeXfs(dir, cacheGiB + 4);
      const cached = await Backend.open({ name: "cache", driver: "file", path: xfs.pool }, { persistence: new MemoryPersistence(), imageCache: { maxSizeGiB: 4 * cacheGiB } });
      try {
        for (const sizeGiB of [1, cacheGiB]) {
          // 768 MiB of data, then a hole to the image's size: what a fresh OS image looks like.
          const path = join(dir, `cache-${sizeGiB}.raw`);
          const digest = sparseImage(path, sizeGiB * GiB, 768 * MiB);
          const source = () => new FileSource(path, [hexDigest("sha256", digest, "bench", "image")]);
          const miss: number[] = [];
          const hit: number[] = [];
          for (let i = 0; i < runs; i++) {
            await cached.imageCache.prune({ all: true });
            let a!: Volume;
            let b!: Volume;
            miss.push(await timed(async () => (a = await cached.createVolumeFromImage(source(), { name: `miss-${sizeGiB}-${i}` }))));
            hit.push(await timed(async () => (b = await cached.createVolumeFromImage(source(), { name: `hit-${sizeGiB}-${i}` }))));
            await a.delete();
            await b.delete();
          }
          await cached.imageCache.prune({ all: true });
          rmSync(path);
          results.push({ row: `a new volume from a cached ${sizeGiB} GiB image (hit), on XFS with reflink`, ours: median(hit), peer: median(miss), peerName: "the same image not cached (miss)" });
        }
      } finally {
        await cached.close();
        xfs.remove();
      }
    }
  } finally {
    await backend.close();
    client?.close();
    if (glance) spawnSync(join(ROOT, "scripts", "glance", "down.sh"), [glance.dir]);
    web.kill("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  }

  const cpu = cpus()[0]?.model ?? "?";
  console.log(`\n${cpus().length} cores (${cpu}), ${Math.round(totalmem() / GiB)} GiB, Linux ${release()}; median of ${runs}; seconds (lower is better); ratio = peer time / ours (1.0 = as fast, higher = faster)\n`);
  console.log("| row | kindling (s) | peer | peer (s) | ratio |");
  // For the cache rows "kindling" is the hit and "peer" the miss: the ratio is how much a hit saves.
  console.log("|---|---|---|---|---|");
  const secs = (x: number) => (x < 0.1 ? x.toFixed(3) : x.toFixed(2));
  for (const r of results) {
    const ratio = Number.isFinite(r.ours) && Number.isFinite(r.peer) ? (r.peer / r.ours).toFixed(r.peer / r.ours >= 100 ? 0 : 2) : "-";
    console.log(`| ${r.row} | ${Number.isFinite(r.ours) ? secs(r.ours) : "-"} | ${r.peerName} | ${Number.isFinite(r.peer) ? secs(r.peer) : "-"} | ${ratio}${r.note ? ` (${r.note})` : ""} |`);
  }
}

void main().catch((err) => {
  console.error(err);
  process.exit(1);
});
