import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync } from "node:fs";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Backend } from "../../provider/library";
import { isRoot, removeDir, tempDir } from "./env";
import { recordsVersusStorage, detachLoopsUnder } from "./consistency";
import { SOAK_BLOCK, decodeBlock, random } from "./soak-data";

const WORKER = resolve(__dirname, "soak-worker.js");

export interface SoakResult {
  seed: number;
  kills: number;
  acknowledged: number;
  /** Records against storage after the run (see recordsVersusStorage). */
  problems: string[];
  /** Acknowledged writes that are not on disk (nor overwritten by a later write of their worker). */
  lost: string[];
  /** Errors a worker got that a racing user should never see. */
  unexpected: string[];
}

/**
 * The randomized multi-process soak: `workers` processes do random operations on one shared
 * file backend (records beside the data, the default) while the soak kills one of them with
 * SIGKILL every 0.3-1.5 s (half the time one caught holding a lease, mid-operation) and starts
 * another in its place; at the end it kills them all. Then
 * the backend is settled (every interrupted operation repaired, as the next use would) and
 * checked: records equal to the storage, every device accounted for, no acknowledged write
 * lost. The seed makes a run repeatable as far as timing allows.
 */
export async function soak(opts: { seconds: number; seed: number; workers?: number }): Promise<SoakResult> {
  const workers = opts.workers ?? 3;
  const next = random(opts.seed);
  const dir = tempDir("kindling-soak-");
  const pool = join(dir, "volumes");
  const logs = join(dir, "logs");
  mkdirSync(logs);
  const until = Date.now() + opts.seconds * 1000;
  const running = new Map<number, { child: ChildProcess; exited: Promise<void>; generation: number }>();
  const start = (slot: number, generation: number) => {
    const settings = {
      pool, slot, generation, until, attach: isRoot,
      seed: (opts.seed * 7919 + slot * 104729 + generation) >>> 0,
      log: join(logs, `acks-${slot}`),
      errors: join(logs, "unexpected"),
    };
    // Repairs are the point here, not news: workers log errors only.
    const child = spawn(process.execPath, [WORKER, JSON.stringify(settings)], { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, KINDLING_LOG_LEVEL: "error" } });
    const exited = new Promise<void>((done) => child.once("exit", () => done()));
    running.set(slot, { child, exited, generation });
  };
  const kill = async (slot: number) => {
    const worker = running.get(slot);
    if (!worker) return;
    worker.child.kill("SIGKILL");
    await worker.exited;
  };

  let kills = 0;
  try {
    const setup = await Backend.open({ name: "soak", driver: "file", path: pool });
    for (let i = 0; i < 3; i++) await setup.createVolume({ sizeGiB: 1, name: `seed-${i}` });
    await setup.close();
    for (let slot = 0; slot < workers; slot++) start(slot, 0);
    const watcher = await Backend.open({ name: "soak", driver: "file", path: pool });
    /** The slot of a worker that holds a lease right now (mid-operation), if one shows up soon. */
    const holder = async (): Promise<number | undefined> => {
      for (let i = 0; i < 100; i++) {
        const records = [
          ...(await watcher.persistence.getVolumes()), ...(await watcher.persistence.getSnapshots()), ...(await watcher.persistence.getConnections()),
        ];
        const held = records.map((record) => ({ record, slot: [...running].find(([, w]) => w.child.pid === record.lease?.owner.pid)?.[0] })).filter((h) => h.slot !== undefined);
        const chosen = held[Math.floor(next() * held.length)];
        if (chosen) {
          if (process.env.KINDLING_SOAK_DEBUG) process.stderr.write(`kill ${chosen.slot} during ${chosen.record.class} ${"status" in chosen.record ? chosen.record.status : ""} ${chosen.record.lease?.operation}\n`);
          return chosen.slot;
        }
        await sleep(5);
      }
      return undefined;
    };
    while (Date.now() < until) {
      await sleep(300 + next() * 1200);
      // Half the kills land at a random moment, half in the middle of an operation: operations
      // take milliseconds, and a kill between two of them proves little.
      const slot = (next() < 0.5 ? await holder() : undefined) ?? Math.floor(next() * workers);
      const generation = (running.get(slot)?.generation ?? 0) + 1;
      await kill(slot);
      kills++;
      if (Date.now() < until) start(slot, generation);
    }
    for (const slot of running.keys()) await kill(slot);
    kills += workers;
    await watcher.close();

    const backend = await Backend.open({ name: "soak", driver: "file", path: pool });
    try {
      await backend.settle();
      const problems = await recordsVersusStorage(backend, pool);
      const { acknowledged, lost } = await checkAcknowledged(backend, logs, workers);
      const unexpected = existsSync(join(logs, "unexpected")) ? readFileSync(join(logs, "unexpected"), "utf8").trim().split("\n").filter(Boolean) : [];
      for (const volume of await backend.volumes()) await volume.disconnect().catch(() => undefined);
      return { seed: opts.seed, kills, acknowledged, problems, lost, unexpected };
    } finally {
      await backend.close();
    }
  } finally {
    for (const slot of running.keys()) await kill(slot);
    detachLoopsUnder(dir);
    removeDir(dir);
  }
}

/** For each place a worker wrote, its last acknowledged write (or a later one of its own) must be there. */
async function checkAcknowledged(backend: Backend, logs: string, workers: number): Promise<{ acknowledged: number; lost: string[] }> {
  const lost: string[] = [];
  let acknowledged = 0;
  for (let slot = 0; slot < workers; slot++) {
    const log = join(logs, `acks-${slot}`);
    if (!existsSync(log)) continue;
    const last = new Map<string, { generation: number; seq: number }>();
    for (const line of readFileSync(log, "utf8").split("\n")) {
      const [volumeId, offset, generation, seq] = line.split(" ");
      if (seq === undefined) continue; // a line cut short by the kill
      acknowledged++;
      // Generations of a slot follow each other in time, and seq grows within one.
      last.set(`${volumeId} ${offset}`, { generation: Number(generation), seq: Number(seq) });
    }
    for (const [where, acked] of last) {
      const [volumeId, offset] = where.split(" ");
      const [record] = await backend.persistence.getVolumes({ id: volumeId });
      if (!record?.location || !existsSync(record.location)) continue; // deleted since: nothing to keep
      const block = Buffer.alloc(SOAK_BLOCK);
      const fd = openSync(record.location, "r");
      try {
        readSync(fd, block, 0, SOAK_BLOCK, Number(offset));
      } finally {
        closeSync(fd);
      }
      const found = decodeBlock(block);
      const later = typeof found === "object" && found.slot === slot && (found.generation > acked.generation || (found.generation === acked.generation && found.seq >= acked.seq));
      if (!later) lost.push(`${record.name} @${offset}: acknowledged write ${slot}/${acked.generation}/${acked.seq}, found ${JSON.stringify(found)}`);
    }
  }
  return { acknowledged, lost };
}
