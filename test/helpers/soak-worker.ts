// One soak worker: a library user in its own process doing random operations on a shared file
// backend until it is killed (kill -9, by the soak) or its time is up. Writes it saw
// acknowledged go to its log, so the checker can tell whether any acknowledged write was lost.
//   node soak-worker.js '{"pool": ..., "slot": 0, "generation": 3, "seed": 42, "log": ..., "errors": ..., "attach": true}'
import { appendFileSync } from "node:fs";
import { Backend, KindlingError, type Volume } from "../../provider/library";
import { blockFor, random, slotOffset } from "./soak-data";

interface Settings {
  pool: string;
  slot: number;
  generation: number;
  seed: number;
  log: string;
  errors: string;
  attach: boolean;
  until: number;
}

/** Errors a racing user may get and must cope with: not there, busy, bad state, name taken. */
const EXPECTED = new Set(["NOT_FOUND", "IN_USE", "CONFLICT", "INVALID_INPUT"]);

async function main(): Promise<void> {
  const s = JSON.parse(process.argv[2]) as Settings;
  const next = random(s.seed);
  const pick = <T>(items: T[]): T | undefined => (items.length ? items[Math.floor(next() * items.length)] : undefined);
  const backend = await Backend.open({ name: "soak", driver: "file", path: s.pool });
  let seq = 0;
  const someVolume = async (): Promise<Volume | undefined> => pick(await backend.volumes());

  const operations: Array<[number, () => Promise<unknown>]> = [
    [3, async () => {
      if ((await backend.volumes()).length >= 6) return;
      // Some thick volumes: their creates and extends write zeroes for a while, a wide window for a kill.
      const roll = next();
      const preallocation = roll < 0.1 ? "full" : roll < 0.3 ? "falloc" : "off";
      await backend.createVolume({ sizeGiB: 1, name: `w${s.slot}-${s.generation}-${seq}`, extraSpecs: { preallocation } });
    }],
    [1, async () => {
      // Data outside the acknowledged blocks, so copies (clones, snapshots) take a while too.
      const v = await someVolume();
      if (!v) return;
      const device = await v.open();
      try {
        await device.pwrite(Buffer.alloc(32 * 1024 * 1024, s.slot + 1), 512 * 1024 * 1024);
      } finally {
        await device.close();
      }
    }],
    [2, async () => (await someVolume())?.delete()],
    [2, async () => {
      const v = await someVolume();
      if (v && v.sizeGiB < 3) await v.extend(v.sizeGiB + 1);
    }],
    [2, async () => (await someVolume())?.createSnapshot({ name: `s${s.slot}-${s.generation}-${seq}` })],
    [2, async () => pick(await backend.snapshots())?.delete()],
    [1, async () => {
      if ((await backend.volumes()).length < 6) await (await someVolume())?.clone({ name: `c${s.slot}-${s.generation}-${seq}` });
    }],
    [1, async () => {
      if ((await backend.volumes()).length < 6) await pick(await backend.snapshots())?.createVolume({ name: `f${s.slot}-${s.generation}-${seq}` });
    }],
    [2, async () => (await someVolume())?.connect("local")],
    [2, async () => (await someVolume())?.disconnect()],
    [s.attach ? 2 : 0, async () => (await someVolume())?.attach()],
    [s.attach ? 2 : 0, async () => (await someVolume())?.detach()],
    [1, async () => (await someVolume())?.update({ metadata: { by: `${s.slot}-${s.generation}`, seq: String(seq) } })],
    [3, async () => {
      const v = await someVolume();
      if (!v) return;
      const offset = slotOffset(s.slot, seq);
      const device = await v.open();
      try {
        await device.pwrite(blockFor(s.slot, s.generation, seq), offset);
        await device.flush();
      } finally {
        await device.close();
      }
      // Acknowledged: the write and its flush returned. From here it must never be lost.
      appendFileSync(s.log, `${v.id} ${offset} ${s.generation} ${seq}\n`);
    }],
  ];
  const total = operations.reduce((sum, [weight]) => sum + weight, 0);

  while (Date.now() < s.until) {
    seq++;
    let roll = next() * total;
    const [, operation] = operations.find(([weight]) => (roll -= weight) < 0) ?? operations[0];
    try {
      await operation();
    } catch (err) {
      if (err instanceof KindlingError && EXPECTED.has(err.code)) continue;
      appendFileSync(s.errors, `${JSON.stringify({ slot: s.slot, generation: s.generation, seq, error: err instanceof Error ? err.stack ?? err.message : String(err) })}\n`);
    }
  }
  await backend.close();
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(1);
});
