import { randomBytes } from "node:crypto";
import { InUseError } from "../../util/errors";
import { describeProcess, parseIdentity, processState, thisProcess, type ProcessIdentity } from "../../util/owner";
import { leaseKey } from "./layout";
import { PreconditionFailed, type ObjectStore } from "./store";

// The writer's lease, kept in the store itself so that it holds across processes and hosts:
// who writes the volume, and until when. It is for liveness and a clear "in use" error; safety
// does not rest on it (every commit is a create-only PUT at the next sequence number, so a
// writer that lost its lease can never commit over another). On S3 the lease is changed by
// compare-and-swap (If-Match); Swift has no conditional overwrite, so there the lease expires by
// itself (X-Delete-After) and each change is read back: detection, not strict exclusion.

interface LeaseBody {
  token: string;
  owner?: ProcessIdentity;
  /** Held by hand (`kindling volume lock`): who, and no expiry. */
  manual?: string;
  /** Milliseconds since the epoch; absent for a lock held by hand. */
  expiresAt?: number;
  released?: boolean;
}

export interface HeldLease {
  token: string;
  etag: string;
  /** performance.now() when the store last confirmed it: a writer stops when this gets old. */
  confirmedAt: number;
}

/** How much clock difference between hosts an expiry allows for. */
const SKEW_MS = 5_000;

function parse(body: Buffer): LeaseBody | undefined {
  try {
    const v = JSON.parse(body.toString("utf8")) as LeaseBody;
    return { ...v, owner: parseIdentity(v.owner) };
  } catch {
    return undefined;
  }
}

export function describeHolder(l: LeaseBody): string {
  if (l.manual) return `a lock held by hand by ${l.manual}`;
  return l.owner ? `writer ${describeProcess(l.owner)}` : "another writer";
}

function free(l: LeaseBody | undefined, now: number): boolean {
  if (!l || l.released) return true;
  if (l.manual) return false;
  if (l.expiresAt !== undefined && now > l.expiresAt + SKEW_MS) return true;
  // A holder that died on this host is known dead at once: no need to wait for the expiry.
  return l.owner !== undefined && processState(l.owner) === "dead";
}

export class StoreLease {
  constructor(
    private readonly store: ObjectStore,
    private readonly volumeId: string,
    private readonly ttlMs: number,
  ) {}

  /** How long a holder that stopped renewing may still count as holding it. */
  get heldAtMostMs(): number {
    return this.ttlMs + SKEW_MS;
  }

  private get key(): string {
    return leaseKey(this.volumeId);
  }

  private body(token: string, manual?: string): LeaseBody {
    return manual ? { token, manual } : { token, owner: thisProcess(), expiresAt: Date.now() + this.ttlMs };
  }

  private putOpts(manual: boolean) {
    return this.store.api === "swift" && !manual ? { deleteAfterSeconds: Math.ceil((this.ttlMs + SKEW_MS) / 1000) } : {};
  }

  /** Who holds the lease now, or undefined when nobody does. */
  async holder(): Promise<string | undefined> {
    const cur = await this.store.read(this.key);
    const l = cur ? parse(cur.body) : undefined;
    return free(l, Date.now()) ? undefined : describeHolder(l as LeaseBody);
  }

  /** Whether a writer (not a lock held by hand) holds the volume now. */
  async heldByWriter(): Promise<boolean> {
    const cur = await this.store.read(this.key);
    const l = cur ? parse(cur.body) : undefined;
    return !free(l, Date.now()) && !l?.manual;
  }

  /** Takes the lease, or throws InUseError naming who holds it. `manual` holds it by hand. */
  async acquire(opts: { manual?: string } = {}): Promise<HeldLease> {
    const token = randomBytes(12).toString("hex");
    const body = Buffer.from(JSON.stringify(this.body(token, opts.manual)));
    for (let attempt = 0; attempt < 5; attempt++) {
      const started = performance.now();
      const cur = await this.store.read(this.key);
      const l = cur ? parse(cur.body) : undefined;
      if (cur && !free(l, Date.now())) {
        throw new InUseError(`volume ${this.volumeId} is held by ${describeHolder(l as LeaseBody)} (its lease at ${this.store.where})`, {
          hint: l?.manual ? "`kindling volume unlock` releases it" : "wait for it to close, or snapshot the volume and use the snapshot",
        });
      }
      try {
        if (this.store.api === "s3") {
          const put = await this.store.put(this.key, body, cur ? { ifMatch: cur.etag } : { ifNoneMatch: true });
          return { token, etag: put.etag, confirmedAt: started };
        }
        const put = await this.store.put(this.key, body, { ...(cur ? {} : { ifNoneMatch: true }), ...this.putOpts(!!opts.manual) });
        // Swift: two takers may both have written; the newest copy says who won.
        const back = await this.store.read(this.key);
        if (back && parse(back.body)?.token === token) return { token, etag: put.etag, confirmedAt: started };
      } catch (err) {
        if (!(err instanceof PreconditionFailed)) throw err;
      }
    }
    throw new InUseError(`volume ${this.volumeId}: another process took its lease at ${this.store.where} at the same moment`, { hint: "try again" });
  }

  /** Extends a held lease; false when it was lost (taken over, or released by force). */
  async renew(held: HeldLease): Promise<boolean> {
    const started = performance.now();
    const body = Buffer.from(JSON.stringify(this.body(held.token)));
    try {
      if (this.store.api === "s3") {
        held.etag = (await this.store.put(this.key, body, { ifMatch: held.etag })).etag;
      } else {
        const cur = await this.store.read(this.key);
        if (!cur || parse(cur.body)?.token !== held.token) return false;
        held.etag = (await this.store.put(this.key, body, this.putOpts(false))).etag;
      }
      held.confirmedAt = started;
      return true;
    } catch (err) {
      if (err instanceof PreconditionFailed) return false;
      throw err;
    }
  }

  /** Gives the lease back; a lease already lost is left to its new holder. */
  async release(held: HeldLease): Promise<void> {
    const body = Buffer.from(JSON.stringify({ token: held.token, released: true } satisfies LeaseBody));
    if (this.store.api === "s3") {
      await this.store.put(this.key, body, { ifMatch: held.etag }).catch((err) => (err instanceof PreconditionFailed ? undefined : Promise.reject(err)));
      return;
    }
    const cur = await this.store.read(this.key);
    if (cur && parse(cur.body)?.token === held.token) await this.store.delete(this.key);
  }

  /**
   * Releases a lock held by hand; `force` releases any holder. Returns who was released, or
   * undefined when nobody held it. Refuses a live writer without `force`.
   */
  async unlock(force: boolean): Promise<string | undefined> {
    const cur = await this.store.read(this.key);
    const l = cur ? parse(cur.body) : undefined;
    if (!cur || free(l, Date.now())) return undefined;
    const who = describeHolder(l as LeaseBody);
    if (!l?.manual && !force) {
      throw new InUseError(`volume ${this.volumeId} is held by ${who}`, { hint: "stop that writer, or `unlock --force` if it died on another host" });
    }
    await this.store.delete(this.key);
    return who;
  }
}
