// Ends a plugin process (kindling's language host, the dynamic-provider process kindling is
// loaded into) when the Pulumi engine that started it is gone. An engine killed with -9 cannot
// tell its plugins to stop, and nothing else would: they would run on, parented to init, for
// as long as the machine stays up. Pulumi's own plugins do the same (rpcutil.Healthcheck
// against the engine's address).
import * as grpc from "@grpc/grpc-js";

export interface EngineWatchOptions {
  /** Time between checks. */
  intervalMs?: number;
  /** Failed checks in a row that mean the engine is gone; one alone may be a hiccup. */
  failures?: number;
  /** How long one check may wait for an answer (a busy engine answers late, not never). */
  deadlineMs?: number;
  /** What to do when the engine is gone; the default is exitWithEngine. */
  onGone?: (address: string) => void;
}

const HEALTH_CHECK = "/grpc.health.v1.Health/Check";

/** One call to the gRPC health service: true when the engine answers at all. */
function engineAnswers(address: string, deadlineMs: number): Promise<boolean> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    // An empty HealthCheckRequest encodes as zero bytes; the answer's content does not matter.
    client.makeUnaryRequest(
      HEALTH_CHECK,
      (request: Buffer) => request,
      (response: Buffer) => response,
      Buffer.alloc(0),
      { deadline: Date.now() + deadlineMs },
      (err) => {
        client.close();
        // An engine without the health service is still an engine that answered.
        resolve(!err || err.code === grpc.status.UNIMPLEMENTED);
      },
    );
  });
}

/**
 * The engine's address among a plugin's arguments: the last positional one. The engine puts
 * its flags (--logtostderr, -v=9, --tracing <endpoint>) first and its address last.
 */
export function engineAddressFromArgs(argv: string[]): string {
  const positionals = argv.filter((a) => !a.startsWith("-"));
  return positionals[positionals.length - 1] ?? "";
}

let watching: string | undefined;

/**
 * Checks the engine at `address` (host:port) until the process ends. The timer never keeps the
 * process alive by itself. A second call with the same address does nothing.
 */
export function watchEngine(address: string, opts: EngineWatchOptions = {}): void {
  if (!address || watching === address) return;
  watching = address;
  const intervalMs = opts.intervalMs ?? 1500;
  const allowed = opts.failures ?? 2;
  const deadlineMs = opts.deadlineMs ?? 5000;
  const onGone = opts.onGone ?? exitWithEngine;
  let failed = 0;
  const next = () => setTimeout(check, intervalMs).unref();
  const check = async () => {
    if (watching !== address) return;
    failed = (await engineAnswers(address, deadlineMs)) ? 0 : failed + 1;
    if (failed >= allowed) {
      watching = undefined;
      onGone(address);
      return;
    }
    next();
  };
  next();
}

/** A normal exit, so that exit handlers run (the rbd driver removes its key files in one). */
export function exitWithEngine(address: string): void {
  try {
    process.stderr.write(`kindling: the Pulumi engine at ${address} no longer answers; exiting\n`);
  } catch {
    // stderr was the dead engine's pipe
  }
  process.exit(1);
}
