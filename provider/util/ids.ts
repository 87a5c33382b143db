import { v7 } from "uuid";

/** Time-ordered ids (UUIDv7): listings sort by creation without an extra column. */
export function newId(): string {
  return v7();
}

export function now(): string {
  return new Date().toISOString();
}
