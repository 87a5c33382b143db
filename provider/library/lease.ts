import { randomUUID } from "node:crypto";
import type { Lease } from "../persistence/records";
import { describeProcess, processState, sameProcess, thisProcess } from "../util/owner";
import { now } from "../util/ids";

/** How leases behave; a Backend may be given its own (tests use short ones). */
export interface LeaseSettings {
  /** A lease whose heartbeat is older than this is taken over (its holder hung or its host died). */
  staleMs: number;
  /** How often a holder renews its lease while it works. */
  heartbeatMs: number;
  /** How long an operation waits for another holder to finish before it gives up. */
  waitMs: number;
}

/**
 * A lease from another host is judged by its heartbeat only, so the stale time leaves room
 * for clock skew and a busy machine; on this host a dead holder is seen at once.
 */
export const DEFAULT_LEASE_SETTINGS: LeaseSettings = { staleMs: 60_000, heartbeatMs: 10_000, waitMs: 300_000 };

/**
 * The leases this process holds now. One of ours that is not here was left behind (a release
 * that could not be written): nobody works under it, so it must not make this very process
 * wait for itself.
 */
const heldHere = new Set<string>();

export function newLease(operation: string, intent?: Record<string, unknown>): Lease {
  const at = now();
  const lease = { token: randomUUID(), owner: thisProcess(), operation, ...(intent ? { intent } : {}), takenAt: at, heartbeat: at };
  heldHere.add(lease.token);
  return lease;
}

/** This process no longer works under the lease (given back, lost, or its object gone). */
export function dropLease(lease: Lease | undefined): void {
  if (lease) heldHere.delete(lease.token);
}

/**
 * "live" while its holder works; "dead" when the holder was a process on this host that is
 * gone; "stale" when a holder elsewhere stopped renewing it.
 */
export function leaseState(lease: Lease, staleMs: number): "live" | "dead" | "stale" {
  const owner = lease.owner;
  const state = owner ? processState(owner) : "dead";
  if (state === "dead") return "dead";
  if (sameProcess(owner, thisProcess()) && !heldHere.has(lease.token)) return "dead";
  if (state === "alive") return "live"; // a process here that runs is never judged by the clock
  const age = Date.now() - Date.parse(lease.heartbeat);
  return Number.isFinite(age) && age <= staleMs ? "live" : "stale";
}

export function isOwnLease(lease: Lease | undefined, held: Lease | undefined): boolean {
  return lease !== undefined && held !== undefined && lease.token === held.token && sameProcess(lease.owner, held.owner);
}

/** "extend by node1:4242 since 2026-...", for messages. */
export function describeLease(lease: Lease): string {
  return `${lease.operation} by ${lease.owner ? describeProcess(lease.owner) : "an unknown process"} since ${lease.takenAt}`;
}
