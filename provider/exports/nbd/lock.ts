import { hostname } from "node:os";
import type { Persistence } from "../../persistence/contract";

/**
 * One writer per volume. A read-write export holds a lock kept as a key-value in the
 * backend's persistence: { owner, heartbeat }. It is taken and renewed with compare-and-set,
 * so two servers cannot both win (swiftnbd's lock could). A lock whose heartbeat is older than
 * `staleMs` (its server crashed), or whose owner was a process on this host that is gone, may
 * be taken over.
 */
/** The owner was a process on this host that no longer runs: its lock needs no waiting out. */
function deadOnThisHost(owner: string): boolean {
  const [host, pid] = owner.split(":");
  if (host !== hostname() || !/^\d+$/.test(pid) || Number(pid) === process.pid) return false;
  try {
    process.kill(Number(pid), 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ESRCH";
  }
}

export class WriterLocks {
  readonly owner: string;

  constructor(
    private readonly staleMs = 15_000,
    owner = `${hostname()}:${process.pid}:${Date.now()}`,
  ) {
    this.owner = owner;
  }

  private key(volumeId: string): string {
    return `nbd/writer/${volumeId}`;
  }

  private value(): string {
    return JSON.stringify({ owner: this.owner, heartbeat: Date.now() });
  }

  /** Takes or renews the lock; returns the other owner when someone else holds it. */
  async acquire(persistence: Persistence, volumeId: string): Promise<{ ok: true } | { ok: false; holder: string }> {
    const key = this.key(volumeId);
    for (let attempt = 0; attempt < 3; attempt++) {
      const [current] = await persistence.getKeyValues(key);
      if (current) {
        const held = JSON.parse(current.value) as { owner: string; heartbeat: number };
        const stale = Date.now() - held.heartbeat > this.staleMs || deadOnThisHost(held.owner);
        if (held.owner !== this.owner && !stale) return { ok: false, holder: held.owner };
      }
      if (await persistence.compareAndSetKeyValue(key, current?.value, this.value())) return { ok: true };
    }
    return { ok: false, holder: "another server (lost the race)" };
  }

  /** Gives the lock back, if it is still ours. */
  async release(persistence: Persistence, volumeId: string): Promise<void> {
    const key = this.key(volumeId);
    const [current] = await persistence.getKeyValues(key);
    if (current && (JSON.parse(current.value) as { owner: string }).owner === this.owner) {
      await persistence.compareAndSetKeyValue(key, current.value, undefined);
    }
  }
}
