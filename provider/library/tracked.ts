import { setTimeout as sleep } from "node:timers/promises";
import type { Persistence } from "../persistence/contract";
import { versionOf, type Lease, type RecordKind, type RecordTypes } from "../persistence/records";
import { ConflictError, InUseError, KindlingError, errorMessage } from "../util/errors";
import { now } from "../util/ids";
import { logger } from "../util/log";
import { describeProcess } from "../util/owner";
import { describeLease, dropLease, isOwnLease, leaseState, newLease } from "./lease";
import type { Inspection } from "../drivers/contract";
import { settleFailedCreate } from "./rollback";
import type { Backend } from "./backend";

/** Another holder's operation on an object, as `list` and `show` report it. */
export interface Busy {
  operation: string;
  by: string;
  since: string;
  /** The holder is gone (or stopped renewing): the next operation repairs the object. */
  stale: boolean;
}

/**
 * What Volume, Snapshot and Connection share: a record in a store that other processes change
 * too. Nothing here writes a record it has not just read at its current version: changes are
 * compare-and-set on the record's version, and an operation runs holding the object's lease
 * (taken by the same compare-and-set), renewed while it works and given back when it ends. A
 * lease left by a holder that died is taken over, and the interrupted operation is repaired
 * from what the backend really holds before anything else runs.
 */
export abstract class Tracked<K extends RecordKind> {
  protected abstract readonly kind: K;
  /** The lease this handle holds while it runs an operation. */
  private held?: Lease;
  /** Set when a renewal found the lease taken over; the next change fails with it. */
  private lost?: Error;
  /** Writes of this handle (changes, renewals) go one at a time, so versions follow each other. */
  private writes: Promise<void> = Promise.resolve();
  /** The operation under way frees space (a delete): its record writes may spend the reserve. */
  private freeing = false;
  /** What the lease taken for the operation under way found interrupted and repaired. */
  protected repairedNow?: Lease;

  constructor(
    readonly backend: Backend,
    protected record: RecordTypes[K],
  ) {}

  get id(): string {
    return this.record.id;
  }

  /** The record's version: it goes up by one with every change. */
  get version(): number {
    return versionOf(this.record);
  }

  /** The operation that holds the object now, if any (as of the last read). */
  get busy(): Busy | undefined {
    const lease = this.record.lease;
    if (!lease || isOwnLease(lease, this.held)) return undefined;
    return { operation: lease.operation, by: lease.owner ? describeProcess(lease.owner) : "unknown", since: lease.takenAt, stale: leaseState(lease, this.backend.leaseSettings.staleMs) !== "live" };
  }

  /** "volume db", for messages. */
  protected abstract describe(): string;
  protected abstract notFound(): KindlingError;
  /** The record says an operation was under way (creating, extending, deleting). */
  protected abstract interrupted(record: RecordTypes[K]): boolean;
  /**
   * Runs under a fresh lease when the last holder died mid-operation (or an older kindling left
   * the record in a passing status): finish or roll back from what the backend holds.
   * "gone" when that removed the object.
   */
  protected abstract repair(previous: RecordTypes[K], lease: Lease | undefined): Promise<"kept" | "gone">;
  /** The object is no longer in the records. */
  protected abstract markGone(): void;
  abstract get gone(): boolean;

  protected get store(): Persistence {
    return this.backend.persistence;
  }

  private async read(): Promise<RecordTypes[K] | undefined> {
    const filter = { id: this.id };
    const found = this.kind === "volume" ? await this.store.getVolumes(filter)
      : this.kind === "snapshot" ? await this.store.getSnapshots(filter)
      : await this.store.getConnections(filter);
    return found[0] as RecordTypes[K] | undefined;
  }

  /** Re-reads the record; an object deleted elsewhere reads as gone. */
  async refresh(): Promise<this> {
    const found = await this.read();
    if (found) this.record = found;
    else this.markGone();
    return this;
  }

  private serially<T>(work: () => Promise<T>): Promise<T> {
    const run = this.writes.then(work, work);
    this.writes = run.then(() => undefined, () => undefined);
    return run;
  }

  /** This handle no longer holds its lease. */
  private letGo(): void {
    dropLease(this.held);
    this.held = undefined;
  }

  private assertHeld(): void {
    if (this.lost) throw this.lost;
    if (!this.held) throw new Error(`${this.describe()}: a change outside an operation (a kindling bug)`);
  }

  /** Changes fields of the record while this handle holds its lease. */
  protected change(fields: Partial<RecordTypes[K]>, opts: { release?: boolean } = {}): Promise<void> {
    return this.serially(async () => {
      this.assertHeld();
      const next = { ...this.record, ...fields, lease: this.held, version: this.version + 1, updatedAt: now() } as RecordTypes[K];
      if (opts.release) delete next.lease;
      if (!(await this.write(() => this.store.compareAndSetRecord(this.kind, next, this.version)))) throw await this.lostLease();
      this.record = next;
      if (opts.release) this.letGo();
    });
  }

  /** A record write of this operation; one that frees space may spend the store's reserve. */
  private write(attempt: () => Promise<boolean>, freeing = this.freeing): Promise<boolean> {
    return this.backend.writeRecord(attempt, { freeing });
  }

  /** Removes the record: the object is gone from the backend too. */
  protected forget(): Promise<void> {
    return this.serially(async () => {
      this.assertHeld();
      // Removing a record (a delete, a rolled back create) must work on a full filesystem.
      const removed = await this.write(() => this.store.compareAndDeleteRecord(this.kind, this.id, this.version), true);
      if (!removed) throw await this.lostLease();
      this.letGo();
      this.markGone();
    });
  }

  private async lostLease(): Promise<Error> {
    const current = await this.read();
    this.letGo();
    const by = current?.lease ? describeLease(current.lease) : current ? "another process" : "a delete elsewhere";
    return new ConflictError(`${this.describe()} was changed by ${by} while this process held its lease`, {
      hint: "this process was taken for gone (was it stopped or suspended?); check the object and run the operation again",
    });
  }

  private renew(): Promise<void> {
    return this.serially(async () => {
      if (!this.held || this.lost) return;
      const lease = { ...this.held, heartbeat: now() };
      const next = { ...this.record, lease, version: this.version + 1 } as RecordTypes[K];
      try {
        if (await this.store.compareAndSetRecord(this.kind, next, this.version)) {
          this.record = next;
          this.held = lease;
        } else {
          this.lost = await this.lostLease();
        }
      } catch (err) {
        // A store that cannot be written now (full, locked): the next renewal tries again.
        logger().warn({ object: this.id, err: errorMessage(err) }, "could not renew a lease");
      }
    });
  }

  /**
   * Runs `work` holding this object's lease, after repairing what a dead holder left. When the
   * object is not in the records (or a repair removed it), `ifGone` answers instead; without it
   * that is a NotFoundError.
   */
  protected leased<T>(
    operation: string,
    work: () => Promise<T>,
    opts: { intent?: Record<string, unknown>; ifGone?: () => T | Promise<T>; freeing?: boolean } = {},
  ): Promise<T> {
    return this.backend.locks.run(this.id, async () => {
      this.freeing = opts.freeing ?? false;
      try {
        if (!(await this.acquire(operation, opts.intent))) {
          if (opts.ifGone) return await opts.ifGone();
          throw this.notFound();
        }
        return await this.holding(work);
      } finally {
        this.freeing = false;
      }
    });
  }

  /**
   * Repairs what a dead holder left, if anything; true when the object is still there after.
   * Decisions that count objects (a volume's delete counts its snapshots and connections) settle
   * them first, so a half-made one never blocks anything for good.
   */
  async settle(): Promise<boolean> {
    if (this.gone) return false;
    const busy = this.busy;
    if (!(busy ? busy.stale : this.interrupted(this.record))) return true;
    return this.leased("repair", async () => true, { ifGone: () => false });
  }

  /** Records this new object as it is, with no operation under way. */
  protected insert(): Promise<void> {
    return this.backend.locks.run(this.id, async () => {
      const first = { ...this.record, version: 1 } as RecordTypes[K];
      delete first.lease;
      if (!(await this.write(() => this.store.compareAndSetRecord(this.kind, first, 0)))) {
        throw new ConflictError(`a ${this.kind} with id ${this.id} already exists`, { field: "id", hint: "choose another id, or leave it out to get a new one" });
      }
      this.record = first;
    });
  }

  /** Records this new object with its lease held for `operation`, then runs `work`. */
  protected created<T>(operation: string, work: () => Promise<T>): Promise<T> {
    return this.backend.locks.run(this.id, async () => {
      const lease = newLease(operation);
      const first = { ...this.record, lease, version: 1 } as RecordTypes[K];
      let inserted = false;
      try {
        inserted = await this.write(() => this.store.compareAndSetRecord(this.kind, first, 0));
      } finally {
        if (!inserted) dropLease(lease);
      }
      if (!inserted) {
        throw new ConflictError(`a ${this.kind} with id ${this.id} already exists`, { field: "id", hint: "choose another id, or leave it out to get a new one" });
      }
      this.record = first;
      this.held = lease;
      this.lost = undefined;
      return this.holding(work);
    });
  }

  /**
   * Records this new volume or snapshot as "creating" (holding its lease), runs the driver's
   * create-like call and marks it available. On failure the shared rollback decides: the
   * record goes when the backend holds nothing, else it stays as "error" for a delete.
   */
  protected make(create: () => Promise<{ location?: string }>, inspect: () => Promise<Inspection>): Promise<void> {
    return this.created("create", async () => {
      try {
        const update = await create();
        const location = update.location ?? (this.record as { location?: string }).location;
        await this.change({ status: "available", location } as unknown as Partial<RecordTypes[K]>, { release: true });
      } catch (err) {
        await settleFailedCreate(this.kind as "volume" | "snapshot", this.id, {
          inspect,
          forget: () => this.forget(),
          markError: () => this.change({ status: "error" } as unknown as Partial<RecordTypes[K]>),
        });
        throw err;
      }
    });
  }

  private async holding<T>(work: () => Promise<T>): Promise<T> {
    const timer = setInterval(() => void this.renew(), this.backend.leaseSettings.heartbeatMs);
    timer.unref();
    try {
      return await work();
    } finally {
      clearInterval(timer);
      await this.release();
      if (this.freeing) await this.backend.restoreReserve();
    }
  }

  /** Gives the lease back (if the work did not already, with its last change). */
  private release(): Promise<void> {
    return this.serially(async () => {
      const held = this.held;
      this.letGo();
      this.lost = undefined;
      if (!held || this.gone) return;
      const next = { ...this.record, version: this.version + 1 } as RecordTypes[K];
      delete next.lease;
      try {
        if (await this.write(() => this.store.compareAndSetRecord(this.kind, next, this.version))) this.record = next;
      } catch (err) {
        // The operation itself is done and recorded; a lease left behind names this process,
        // so it counts as stale the moment this process exits.
        logger().warn({ object: this.id, err: errorMessage(err) }, "could not give a lease back");
      }
    });
  }

  /** Takes the lease: waits while a live holder works, takes it over from a dead one. */
  private async acquire(operation: string, intent?: Record<string, unknown>): Promise<boolean> {
    const settings = this.backend.leaseSettings;
    const deadline = Date.now() + settings.waitMs;
    let pause = 10;
    this.repairedNow = undefined;
    for (;;) {
      const current = await this.read();
      if (!current) {
        this.markGone();
        return false;
      }
      this.record = current;
      const previous = current.lease;
      if (previous && leaseState(previous, settings.staleMs) === "live") {
        if (Date.now() >= deadline) {
          throw new InUseError(`${this.describe()} is busy: ${describeLease(previous)}`, { hint: "try again when that has finished" });
        }
        await sleep(pause);
        pause = Math.min(pause * 2, 500);
        continue;
      }
      const lease = newLease(operation, intent);
      const next = { ...current, lease, version: versionOf(current) + 1 } as RecordTypes[K];
      let taken = false;
      try {
        taken = await this.write(() => this.store.compareAndSetRecord(this.kind, next, versionOf(current)));
      } finally {
        if (!taken) dropLease(lease);
      }
      if (!taken) continue; // lost a race for it: look again
      this.record = next;
      this.held = lease;
      this.lost = undefined;
      if (previous || this.interrupted(current)) {
        logger().warn({ object: this.id, interrupted: previous ? describeLease(previous) : current }, `repairing ${this.describe()}: an earlier operation did not finish`);
        let outcome: "kept" | "gone";
        try {
          outcome = await this.repair(current, previous);
        } catch (err) {
          await this.release();
          throw err;
        }
        if (outcome === "gone") {
          this.letGo();
          this.markGone();
          return false;
        }
        this.repairedNow = previous;
      }
      return true;
    }
  }
}
