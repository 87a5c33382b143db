import type { Persistence } from "../persistence/contract";
import { describeProcess, parseIdentity, processState, sameProcess, thisProcess, type ProcessIdentity } from "../util/owner";

/**
 * What a server that exports volumes (the NBD daemon) keeps in the records so that others can
 * see it: the single writer of each volume, and a claim for every connection it serves. Both
 * are key-values in the backend's persistence, written with compare-and-set, each naming its
 * owner process (host, boot, pid, start time) and a heartbeat the owner renews.
 *
 * The library reads the claims: `disconnect` waits until the server has closed the clients of
 * the connection it removed, and `delete` refuses a volume that is still served.
 */

/** How long a heartbeat stays fresh when its holder did not say (the NBD daemon's default). */
export const DEFAULT_STALE_MS = 15_000;

const WRITER_PREFIX = "nbd/writer/";
const CLAIM_PREFIX = "nbd/export/";

export function writerLockKey(volumeId: string): string {
  return `${WRITER_PREFIX}${volumeId}`;
}

/**
 * One key per connection and owner: read-only exports may be served by several servers at once,
 * and each must give back only its own claim.
 */
export function exportClaimKey(connectionId: string, owner: ProcessIdentity): string {
  return `${CLAIM_PREFIX}${connectionId}/${owner.host}:${owner.pid}:${owner.start}`;
}

interface Held {
  owner: ProcessIdentity;
  heartbeat: number;
  /** How old its holder lets its heartbeat get before the lock counts as abandoned. */
  staleMs?: number;
  /** What the holding process does: absent for the NBD daemon (locks written before there were others). */
  purpose?: WriterPurpose;
}

/** Processes that hold a writer lock: the NBD daemon's read-write exports, and downloads (which keep writers out). */
export type WriterPurpose = "nbd serve" | "download";

/**
 * A writer lock held by hand (`kindling volume lock`, as swiftnbd-ctl's lock): it names the
 * user and host who took it and has no heartbeat and no expiry, so nothing takes it over; only
 * `kindling volume unlock` gives it back.
 */
export interface HandHolder {
  user: string;
  host: string;
  /** When it was taken (ISO 8601). */
  since: string;
}

/** Who holds a volume's writer lock, as `kindling volume show` and the refusals name it. */
export type WriterHolder =
  | ({ kind: "hand"; live: true; description: string } & HandHolder)
  | {
    kind: "process";
    purpose: WriterPurpose;
    owner: ProcessIdentity;
    heartbeat: number;
    /** False once its process is gone or its heartbeat went stale: anyone may take the lock over. */
    live: boolean;
    description: string;
  };

/**
 * An owner as a lock or claim keeps it. Locks written before owners had an identity held the
 * string "host:pid:time"; they are still read, so an upgrade does not take over a live writer.
 */
function parseOwner(value: unknown): ProcessIdentity | undefined {
  if (typeof value === "string") {
    const match = /^(.*):(\d+):\d+$/.exec(value);
    return match ? { host: match[1], boot: "", pid: Number(match[2]), start: "" } : undefined;
  }
  return parseIdentity(value);
}

function parseJson(value: string): Record<string, unknown> | undefined {
  try {
    const parsed: unknown = JSON.parse(value);
    return parsed && typeof parsed === "object" ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function parseHeld(value: string): Held | undefined {
  const v = parseJson(value);
  const owner = v && parseOwner(v.owner);
  if (!v || !owner || typeof v.heartbeat !== "number") return undefined;
  return {
    owner,
    heartbeat: v.heartbeat,
    ...(typeof v.staleMs === "number" && v.staleMs > 0 ? { staleMs: v.staleMs } : {}),
    ...(v.purpose === "download" || v.purpose === "nbd serve" ? { purpose: v.purpose } : {}),
  };
}

function parseHand(value: string): HandHolder | undefined {
  const hand = parseJson(value)?.byHand as Record<string, unknown> | undefined;
  if (!hand || typeof hand !== "object" || typeof hand.user !== "string" || typeof hand.host !== "string") return undefined;
  return { user: hand.user, host: hand.host, since: typeof hand.since === "string" ? hand.since : "" };
}

/**
 * A process lock that anyone may take over: its heartbeat is older than its holder allows (or,
 * for locks that do not say, `staleMs`), or its process is gone from this host.
 */
function abandoned(held: Held, staleMs: number): boolean {
  return Date.now() - held.heartbeat > (held.staleMs ?? staleMs) || processState(held.owner) === "dead";
}

function describeHand(hand: HandHolder): string {
  return `${hand.user}@${hand.host} (by hand${hand.since ? `, since ${hand.since}` : ""})`;
}

function holderOf(value: string, staleMs: number): WriterHolder | undefined {
  const hand = parseHand(value);
  if (hand) return { kind: "hand", live: true, ...hand, description: describeHand(hand) };
  const held = parseHeld(value);
  if (!held) return undefined;
  const purpose = held.purpose ?? "nbd serve";
  return {
    kind: "process",
    purpose,
    owner: held.owner,
    heartbeat: held.heartbeat,
    live: !abandoned(held, staleMs),
    description: `kindling ${purpose === "download" ? "volume download" : "nbd serve"} on ${describeProcess(held.owner)}`,
  };
}

/**
 * A holder that can no longer act: its process is gone from this host, or (on another host,
 * where only the heartbeat tells) it stopped renewing. A holder that runs here is alive however
 * old its heartbeat: it may be busy, and it still has its sockets.
 */
function gone(held: Held, staleMs: number): boolean {
  const state = processState(held.owner);
  if (state === "dead") return true;
  return state === "elsewhere" && Date.now() - held.heartbeat > staleMs;
}

export type LockResult = { ok: true } | { ok: false; holder: string; owner?: ProcessIdentity; writer?: WriterHolder };

/**
 * One writer per volume. A read-write export holds a lock kept as a key-value: { owner,
 * heartbeat }. It is taken and renewed with compare-and-set, so two servers cannot both win
 * (swiftnbd's lock could). A lock whose heartbeat is older than `staleMs` (its server crashed
 * or hangs), or whose owner was a process on this host that is gone, may be taken over; its old
 * holder learns so at its next renewal and closes its clients.
 */
export class WriterLocks {
  constructor(
    private readonly staleMs = DEFAULT_STALE_MS,
    readonly owner: ProcessIdentity = thisProcess(),
    /** Said in the lock so that those it refuses learn why; the NBD daemon's locks leave it out. */
    private readonly purpose?: WriterPurpose,
  ) {}

  private value(): string {
    // The lock says how long it stays fresh unrenewed, so every reader judges it by its holder's
    // promise rather than by its own setting.
    return JSON.stringify({ owner: this.owner, heartbeat: Date.now(), staleMs: this.staleMs, ...(this.purpose ? { purpose: this.purpose } : {}) });
  }

  /** Takes or renews the lock; says who holds it when someone else does. */
  async acquire(persistence: Persistence, volumeId: string): Promise<LockResult> {
    const key = writerLockKey(volumeId);
    for (let attempt = 0; attempt < 3; attempt++) {
      const [current] = await persistence.getKeyValues(key);
      if (current) {
        // A lock held by hand never expires: only `kindling volume unlock` ends it.
        const hand = parseHand(current.value);
        if (hand) return { ok: false, holder: describeHand(hand), writer: holderOf(current.value, this.staleMs) };
        // A value nobody can parse has no owner who could renew it: it is taken over.
        const held = parseHeld(current.value);
        if (held && !sameProcess(held.owner, this.owner) && !abandoned(held, this.staleMs)) {
          return { ok: false, holder: describeProcess(held.owner), owner: held.owner, writer: holderOf(current.value, this.staleMs) };
        }
      }
      if (await persistence.compareAndSetKeyValue(key, current?.value, this.value())) return { ok: true };
    }
    return { ok: false, holder: "another server (lost the race)" };
  }

  /** Gives the lock back, if it is still ours. */
  async release(persistence: Persistence, volumeId: string): Promise<void> {
    const key = writerLockKey(volumeId);
    const [current] = await persistence.getKeyValues(key);
    const held = current && !parseHand(current.value) && parseHeld(current.value);
    if (held && sameProcess(held.owner, this.owner)) await persistence.compareAndSetKeyValue(key, current.value, undefined);
  }
}

/** A volume's writer lock as it is now: who holds it (none when unreadable) and its raw value, for compare-and-set. */
export interface WriterLockState {
  holder?: WriterHolder;
  value: string;
}

/** Who holds the volume's writer lock, if anyone; stale process locks are returned with `live: false`. */
export async function readWriterLock(persistence: Persistence, volumeId: string): Promise<WriterLockState | undefined> {
  const [current] = await persistence.getKeyValues(writerLockKey(volumeId));
  return current ? { holder: holderOf(current.value, DEFAULT_STALE_MS), value: current.value } : undefined;
}

/**
 * Takes the volume's writer lock by hand. Refused while a live process or another hand holds
 * it (the refusal names them); a lock whose process is gone or stale is taken over, as the NBD
 * daemon would. Returns the value written, which `releaseWriterLock` needs.
 */
export async function lockByHand(persistence: Persistence, volumeId: string, who: { user: string; host: string }): Promise<{ ok: true; value: string } | { ok: false; holder: WriterHolder | undefined }> {
  const value = JSON.stringify({ byHand: { user: who.user, host: who.host, since: new Date().toISOString() } });
  for (let attempt = 0; attempt < 3; attempt++) {
    const current = await readWriterLock(persistence, volumeId);
    if (current?.holder?.live) return { ok: false, holder: current.holder };
    if (await persistence.compareAndSetKeyValue(writerLockKey(volumeId), current?.value, value)) return { ok: true, value };
  }
  return { ok: false, holder: undefined };
}

/** Removes the lock if it still holds `value` (nobody took it meanwhile); says whether it did. */
export function releaseWriterLock(persistence: Persistence, volumeId: string, value: string): Promise<boolean> {
  return persistence.compareAndSetKeyValue(writerLockKey(volumeId), value, undefined);
}

/** A server serving one connection's export. */
export interface ExportClaim {
  owner: ProcessIdentity;
  heartbeat: number;
  connectionId: string;
  volumeId: string;
  /** Set when the export is a snapshot (of volume `volumeId`). */
  snapshotId?: string;
  mode: "rw" | "ro";
  /** How old the heartbeat may get before the claim counts as abandoned (its owner's setting). */
  staleMs?: number;
}

function parseClaim(value: string): ExportClaim | undefined {
  const v = parseJson(value);
  const owner = v && parseIdentity(v.owner);
  if (!v || !owner || typeof v.heartbeat !== "number" || typeof v.connectionId !== "string" || typeof v.volumeId !== "string") return undefined;
  if (v.mode !== "rw" && v.mode !== "ro") return undefined;
  return {
    owner,
    heartbeat: v.heartbeat,
    connectionId: v.connectionId,
    volumeId: v.volumeId,
    ...(typeof v.snapshotId === "string" ? { snapshotId: v.snapshotId } : {}),
    mode: v.mode,
    ...(typeof v.staleMs === "number" ? { staleMs: v.staleMs } : {}),
  };
}

/** The claims of one server process: taken when it starts serving an export, renewed, given back. */
export class ExportClaims {
  constructor(
    private readonly staleMs = DEFAULT_STALE_MS,
    readonly owner: ProcessIdentity = thisProcess(),
  ) {}

  /** Takes or renews the claim on a connection's export. */
  async hold(persistence: Persistence, what: { connectionId: string; volumeId: string; snapshotId?: string; mode: "rw" | "ro" }): Promise<void> {
    const claim: ExportClaim = {
      owner: this.owner,
      heartbeat: Date.now(),
      connectionId: what.connectionId,
      volumeId: what.volumeId,
      ...(what.snapshotId ? { snapshotId: what.snapshotId } : {}),
      mode: what.mode,
      staleMs: this.staleMs,
    };
    // The key is this process's own: nobody else writes it (readers only remove it once its
    // owner is gone), so a plain set is enough.
    await persistence.setKeyValue({ key: exportClaimKey(what.connectionId, this.owner), value: JSON.stringify(claim) });
  }

  /** Gives the claim back: only once every client of the export has been closed. */
  async release(persistence: Persistence, connectionId: string): Promise<void> {
    await persistence.deleteKeyValue(exportClaimKey(connectionId, this.owner));
  }
}

export interface ClaimFilter {
  volumeId?: string;
  snapshotId?: string;
  connectionId?: string;
}

/**
 * The claims of servers that still serve: owner alive, or (on another host) heartbeat fresh.
 * Claims of dead or stale owners are removed on the way. `volumeId` matches a volume's own
 * exports and those of its snapshots (a snapshot's claim names its volume); `snapshotId` one
 * snapshot's.
 */
export async function liveClaims(persistence: Persistence, filter: ClaimFilter = {}): Promise<ExportClaim[]> {
  const live: ExportClaim[] = [];
  for (const kv of await persistence.getKeyValues()) {
    if (!kv.key.startsWith(CLAIM_PREFIX)) continue;
    const claim = parseClaim(kv.value);
    if (!claim || gone(claim, claim.staleMs ?? DEFAULT_STALE_MS)) {
      // Compare-and-set: an owner that renewed meanwhile keeps its claim. A store that cannot be
      // written still gets a correct answer.
      await persistence.compareAndSetKeyValue(kv.key, kv.value, undefined).catch(() => undefined);
      continue;
    }
    if (filter.volumeId !== undefined && claim.volumeId !== filter.volumeId) continue;
    if (filter.snapshotId !== undefined && claim.snapshotId !== filter.snapshotId) continue;
    if (filter.connectionId !== undefined && claim.connectionId !== filter.connectionId) continue;
    live.push(claim);
  }
  return live;
}

/**
 * Waits until no live server claims the connection's export any more (its clients are closed),
 * polling the records. True when released, false when `timeoutMs` passed first.
 */
export async function waitForClaimRelease(persistence: Persistence, connectionId: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await liveClaims(persistence, { connectionId })).length === 0) return true;
    const left = deadline - Date.now();
    if (left <= 0) return false;
    await new Promise((resolve) => setTimeout(resolve, Math.min(100, left)));
  }
}
