// A library user in a process of its own, for races between processes: waits for a barrier
// file (so racers start together), runs one operation on each named volume in turn, and prints
// a JSON summary: { ok, failed: { ERROR_CODE: count } }.
//   node race-worker.js '<backend config json>' <operation> <barrier file> <name>...
import { existsSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { Backend, KindlingError } from "../../provider/library";

const operations: Record<string, (backend: Backend, name: string) => Promise<unknown>> = {
  extend: async (b, name) => (await b.getVolume(name)).extend(2),
  delete: async (b, name) => (await b.getVolume(name)).delete(),
  update: async (b, name) => (await b.getVolume(name)).update({ metadata: { owner: "racer", name } }),
  connect: async (b, name) => (await b.getVolume(name)).connect("local"),
  attach: async (b, name) => (await b.getVolume(name)).attach(),
  snapshot: async (b, name) => (await b.getVolume(name)).createSnapshot({ name: `${name}-snap-${process.pid}` }),
  clone: async (b, name) => (await b.getVolume(name)).clone({ name: `${name}-clone-${process.pid}` }),
};

async function main(): Promise<void> {
  const [config, operation, barrier, ...names] = process.argv.slice(2);
  const run = operations[operation];
  if (!run) throw new Error(`unknown operation ${operation}`);
  const backend = await Backend.open(JSON.parse(config));
  while (!existsSync(barrier)) await sleep(2);
  const summary = { ok: 0, failed: {} as Record<string, number> };
  for (const name of names) {
    try {
      await run(backend, name);
      summary.ok++;
    } catch (err) {
      const code = err instanceof KindlingError ? err.code : `unexpected: ${(err as Error).message}`;
      summary.failed[code] = (summary.failed[code] ?? 0) + 1;
    }
  }
  await backend.close();
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(1);
});
