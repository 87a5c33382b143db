import { statfsSync } from "node:fs";
import { dirname } from "node:path";
import { BackendError, KindlingError, NoSpaceError, errorMessage, isErrno } from "../util/errors";

/** SQLite's primary result codes that mean something to a user. */
const SQLITE = { BUSY: 5, LOCKED: 6, READONLY: 8, IOERR: 10, CORRUPT: 11, FULL: 13, CANTOPEN: 14, NOTADB: 26 } as const;

/**
 * A failure of a records store as a typed error that names the store, keeping the original as
 * its cause: "database is locked" alone does not say which database, nor what to do.
 */
export function storeError(err: unknown, location: string): unknown {
  if (err instanceof KindlingError) return err;
  const cause = err;
  const sqlite = sqliteCode(err);
  const detail = errorMessage(err);
  if (sqlite === SQLITE.FULL || isErrno(err, "ENOSPC", "EDQUOT") || (sqlite === SQLITE.IOERR && filesystemFull(location))) {
    return new NoSpaceError(`the records store ${location} has no space left (${detail})`, {
      hint: "free space on its filesystem; deleting volumes and snapshots still works",
      cause,
    });
  }
  if (sqlite === SQLITE.BUSY || sqlite === SQLITE.LOCKED) {
    return new BackendError(`the records store ${location} is locked by another process (${detail})`, {
      hint: "another kindling command or daemon is writing to it; try again",
      cause,
    });
  }
  if (sqlite === SQLITE.CORRUPT || sqlite === SQLITE.NOTADB || isErrno(err, "ECORRUPT")) {
    return new BackendError(`the records store ${location} is corrupt or not a kindling database (${detail})`, {
      hint: "restore it from a backup, or move it aside to start with no records",
      cause,
    });
  }
  if (sqlite === SQLITE.READONLY || isErrno(err, "EROFS", "EPERM", "EACCES")) {
    return new BackendError(`the records store ${location} is read-only (${detail})`, {
      hint: "listing works; changes need write access to it",
      cause,
    });
  }
  if (isErrno(err, "ENOTDIR", "EISDIR") || sqlite === SQLITE.CANTOPEN) {
    return new BackendError(`cannot open the records store ${location} (${detail})`, {
      hint: "check the persistence path: sqlite wants a file, json a directory",
      cause,
    });
  }
  if (sqlite === SQLITE.IOERR) return new BackendError(`the records store ${location} could not be read or written (${detail})`, { cause });
  return err;
}

/**
 * SQLite reports some writes that failed for want of space (growing its shared-memory file)
 * as plain I/O errors; a filesystem with next to nothing left says what they were.
 */
function filesystemFull(location: string): boolean {
  for (const path of [location, dirname(location)]) {
    try {
      const fs = statfsSync(path);
      return fs.bavail * fs.bsize < 256 * 1024;
    } catch {
      // not there: try its directory
    }
  }
  return false;
}

function sqliteCode(err: unknown): number | undefined {
  const e = err as { code?: string; errcode?: number };
  // Extended codes carry the primary code in their low byte (SQLITE_IOERR_WRITE = 778 -> 10).
  return e?.code === "ERR_SQLITE_ERROR" && typeof e.errcode === "number" ? e.errcode & 0xff : undefined;
}

/** True for a failure that means the store's filesystem is full. */
export function isNoSpace(err: unknown): boolean {
  return err instanceof KindlingError && err.code === "NO_SPACE";
}
