import { ConflictError } from "../util/errors";
import { versionOf, type RecordKind, type Versioned } from "./records";

/** Pieces every plugin uses, so each one answers filters, versions and name clashes the same way. */

export function copy<T>(record: T): T {
  // Through JSON, as every stored plugin does, so all plugins return records of the same shape
  // (no undefined-valued keys).
  return JSON.parse(JSON.stringify(record)) as T;
}

/** True when every filter field that is set equals the record's field of the same name. */
export function matches(record: object, filter: object): boolean {
  return Object.entries(filter).every(
    ([k, v]) => v === undefined || (record as Record<string, unknown>)[k] === v,
  );
}

type Named = { id: string; name: string; backend: string };

/** Names are unique per backend, so the command can take a name wherever it takes an id. */
export function assertUniqueName(kind: "volume" | "snapshot", record: Named, existing: Iterable<Named>): void {
  for (const other of existing) {
    if (other.id !== record.id && other.backend === record.backend && other.name === record.name) {
      throw nameTaken(kind, record.name, record.backend);
    }
  }
}

export function nameTaken(kind: "volume" | "snapshot", name: string, backend: string): ConflictError {
  return new ConflictError(`a ${kind} named ${JSON.stringify(name)} already exists on backend ${JSON.stringify(backend)}`, {
    field: "name",
    hint: "choose another name or use the existing one",
  });
}

/**
 * The compare-and-set rule of the document stores (memory, json), given what is stored now:
 * the write goes ahead when the stored version is the expected one (no record for 0). The
 * name is checked only for a new record or a rename (see the contract).
 */
export function compareAndSetAllowed(
  kind: RecordKind,
  record: Named & Versioned,
  expected: number,
  current: (Named & Versioned) | undefined,
  all: () => Iterable<Named>,
): boolean {
  if (expected === 0 ? current !== undefined : current === undefined || versionOf(current) !== expected) return false;
  if (kind !== "connection" && (!current || current.name !== record.name)) assertUniqueName(kind, record, all());
  return true;
}
