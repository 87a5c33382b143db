import type { Persistence } from "../persistence/contract";
import type { NbdEndpoint, NbdTlsAdvert } from "../attach/protocols";
import { defaultNbdEndpoint } from "../attach/protocols";
import { parseIdentity, processState, sameProcess, thisProcess, type ProcessIdentity } from "../util/owner";
import { DEFAULT_STALE_MS } from "./export-claims";

/**
 * Where each running `kindling nbd serve` serves its exports, kept as a key-value in every
 * backend's records it serves: the address it listens on, the address it tells consumers to
 * use (`--advertise`, for consumers on other hosts when it listens on a wildcard or behind a
 * NAT), and the public half of its TLS setup. Connection info for `nbd` is made from it, so it
 * names where a server really is, not where one would be by default.
 */

const SERVER_PREFIX = "nbd/server/";

export interface NbdServerAdvert {
  owner: ProcessIdentity;
  heartbeat: number;
  staleMs: number;
  listen: { host: string; port: number };
  /** What consumers are told: `--advertise`, else the listening address. */
  address: { host: string; port: number };
  tls?: NbdTlsAdvert;
}

function serverKey(owner: ProcessIdentity): string {
  return `${SERVER_PREFIX}${owner.host}:${owner.pid}:${owner.start}`;
}

function parseAdvert(value: string): NbdServerAdvert | undefined {
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(value) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const owner = parseIdentity(v?.owner);
  const address = v?.address as { host?: unknown; port?: unknown } | undefined;
  if (!owner || typeof v.heartbeat !== "number" || typeof address?.host !== "string" || typeof address.port !== "number") return undefined;
  return v as unknown as NbdServerAdvert;
}

/** Alive: its process runs here, or (elsewhere) it renewed its heartbeat lately. */
function live(advert: NbdServerAdvert): boolean {
  const state = processState(advert.owner);
  if (state === "dead") return false;
  return state === "alive" || Date.now() - advert.heartbeat <= (advert.staleMs || DEFAULT_STALE_MS);
}

/** The servers that say they serve this backend's exports now, oldest first. */
export async function liveNbdServers(persistence: Persistence): Promise<NbdServerAdvert[]> {
  const all = await persistence.getKeyValues();
  return all
    .filter((kv) => kv.key.startsWith(SERVER_PREFIX))
    .map((kv) => parseAdvert(kv.value))
    .filter((a): a is NbdServerAdvert => a !== undefined && live(a))
    .sort((a, b) => a.owner.start.localeCompare(b.owner.start) || a.owner.pid - b.owner.pid);
}

/**
 * Where consumers of this backend's NBD exports go: the oldest running server (every server of
 * a backend serves all its exports; the oldest took the writer locks first), else the default.
 */
export async function nbdEndpointFor(persistence: Persistence): Promise<NbdEndpoint> {
  const [server] = await liveNbdServers(persistence).catch(() => []);
  if (!server) return defaultNbdEndpoint();
  return { host: server.address.host, port: server.address.port, ...(server.tls ? { tls: server.tls } : {}), source: "server" };
}

/** One server's record in the backends it serves: written at start, renewed, removed at stop. */
export class NbdServerRecord {
  private readonly owner = thisProcess();

  constructor(private readonly advert: Omit<NbdServerAdvert, "owner" | "heartbeat">) {}

  private value(): string {
    return JSON.stringify({ ...this.advert, owner: this.owner, heartbeat: Date.now() });
  }

  async write(persistence: Persistence): Promise<void> {
    await persistence.setKeyValue({ key: serverKey(this.owner), value: this.value() });
  }

  /** Renews the heartbeat once a third of the staleness has passed (not at every poll). */
  async renew(persistence: Persistence): Promise<void> {
    const [current] = await persistence.getKeyValues(serverKey(this.owner));
    const held = current && parseAdvert(current.value);
    if (held && sameProcess(held.owner, this.owner) && Date.now() - held.heartbeat < this.advert.staleMs / 3) return;
    await this.write(persistence);
  }

  async remove(persistence: Persistence): Promise<void> {
    await persistence.deleteKeyValue(serverKey(this.owner));
  }
}
