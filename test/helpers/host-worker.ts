// A library user on a host of its own (see hosts.ts), for races between hosts: opens its
// backend, says it is ready, and runs its plan phase by phase. Each phase waits for its barrier
// file, so every host starts it at the same moment, runs its step sequences all at once
// (Promise.all), and writes what each step did: { ...step, ok, id } or { ...step, ok: false, code }.
//   node host-worker.js <plan file>
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Backend, KindlingError } from "../../provider/library";
import type { Outcome, Plan, Step } from "./hosts";

async function perform(backend: Backend, step: Step): Promise<{ id: string; bornGiB?: number } | undefined> {
  const made = (v: { id: string; sizeGiB: number }) => ({ id: v.id, bornGiB: v.sizeGiB });
  switch (step.op) {
    case "create":
      return made(await backend.createVolume({ name: step.name, sizeGiB: step.sizeGiB, extraSpecs: step.extraSpecs }));
    case "snapshot":
      return { id: (await (await backend.getVolume(step.volume)).createSnapshot({ name: step.name })).id };
    case "clone":
      return made(await (await backend.getVolume(step.volume)).clone({ name: step.name }));
    case "extend":
      await (await backend.getVolume(step.volume)).extend(step.sizeGiB);
      return undefined;
    case "delete-volume":
      await (await backend.getVolume(step.name)).delete();
      return undefined;
    case "delete-snapshot":
      await (await backend.getSnapshot(step.name)).delete();
      return undefined;
  }
}

async function run(backend: Backend, step: Step): Promise<Outcome> {
  try {
    return { ...step, ok: true, ...(await perform(backend, step)) };
  } catch (err) {
    // An error that is not kindling's is a failure of its own: it shows as "unexpected".
    const code = err instanceof KindlingError ? err.code : "unexpected";
    return { ...step, ok: false, code, message: (err as Error).message };
  }
}

async function main(): Promise<void> {
  const plan = JSON.parse(readFileSync(process.argv[2], "utf8")) as Plan;
  const host = hostname();
  const backend = await Backend.open(plan.backend as never, { leases: plan.leases });
  writeFileSync(join(plan.exchange, `ready-${host}`), "");
  for (const [phase, sequences] of plan.phases.entries()) {
    while (!existsSync(join(plan.exchange, `go-${phase}`))) await sleep(2);
    const outcomes = await Promise.all(sequences.map(async (steps) => {
      const done: Outcome[] = [];
      for (const step of steps) done.push(await run(backend, step));
      return done;
    }));
    const file = join(plan.exchange, `done-${phase}-${host}.json`);
    writeFileSync(`${file}.tmp`, JSON.stringify(outcomes.flat()));
    renameSync(`${file}.tmp`, file);
  }
  await backend.close();
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(1);
});
