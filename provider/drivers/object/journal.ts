import { readdirSync, readFileSync, unlinkSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { BackendError } from "../../util/errors";
import { checkedId } from "./layout";

// The local journal of `durability: local`: every write, trim and zero is appended to a file in
// the cache directory as it is acknowledged, and a FLUSH returns once the journal is on disk
// (fdatasync), not once the data is in the object store. Commits go on in the background; a
// writer that dies leaves its journal, and the next writer on this host replays what the store
// never got, if no other writer has opened the volume since (the journal names the epoch it
// wrote under). Journal files are cut every JOURNAL_FILE_BYTES and deleted once committed.

const MAGIC = 0x4b4e4a31; // "KNJ1"
const ENTRY_HEADER = 4 + 8 + 8 + 4 + 1 + 4 + 8; // magic, jseq, offset, length, kind, crc, epoch
const JOURNAL_FILE_BYTES = 64 * 1024 * 1024;

export type JournalKind = "write" | "unmap" | "zero";
const KIND_CODE: Record<JournalKind, number> = { write: 1, unmap: 2, zero: 3 };
const CODE_KIND: Record<number, JournalKind> = { 1: "write", 2: "unmap", 3: "zero" };

export interface JournalEntry {
  jseq: number;
  epoch: number;
  kind: JournalKind;
  offset: number;
  length: number;
  data?: Buffer;
}

interface JournalFile {
  path: string;
  handle: FileHandle;
  bytes: number;
  maxJseq: number;
}

const prefixOf = (volumeId: string) => `journal-${checkedId(volumeId)}-`;

/** Journal files a dead writer left for the volume, oldest first. */
export function leftJournals(cacheDir: string, volumeId: string): string[] {
  const prefix = prefixOf(volumeId);
  let names: string[];
  try {
    names = readdirSync(cacheDir);
  } catch {
    return [];
  }
  return names
    .filter((n) => n.startsWith(prefix) && /^\d+$/.test(n.slice(prefix.length)))
    .sort((a, b) => Number(a.slice(prefix.length)) - Number(b.slice(prefix.length)))
    .map((n) => join(cacheDir, n));
}

/** Every whole entry of the files, in order; a torn last entry (the crash) ends the reading. */
export function readJournals(paths: string[]): JournalEntry[] {
  const out: JournalEntry[] = [];
  for (const path of paths) {
    const bytes = readFileSync(path);
    for (let at = 0; at + ENTRY_HEADER <= bytes.length; ) {
      if (bytes.readUInt32BE(at) !== MAGIC) break;
      const jseq = bytes.readDoubleBE(at + 4);
      const offset = bytes.readDoubleBE(at + 12);
      const length = bytes.readUInt32BE(at + 20);
      const kind = CODE_KIND[bytes[at + 24]];
      const crc = bytes.readUInt32BE(at + 25);
      const epoch = bytes.readDoubleBE(at + 29);
      const dataLength = kind === "write" ? length : 0;
      if (!kind || at + ENTRY_HEADER + dataLength > bytes.length) break;
      const data = kind === "write" ? bytes.subarray(at + ENTRY_HEADER, at + ENTRY_HEADER + length) : undefined;
      if (data && crc32(data) !== crc) break;
      out.push({ jseq, epoch, kind, offset, length, data: data ? Buffer.from(data) : undefined });
      at += ENTRY_HEADER + dataLength;
    }
  }
  return out;
}

export function removeJournals(paths: string[]): void {
  for (const p of paths) {
    try {
      unlinkSync(p);
    } catch {
      // gone already
    }
  }
}

export class Journal {
  private files: JournalFile[] = [];
  private next = 0;
  private jseq = 0;
  private writing: Promise<void> = Promise.resolve();
  private failed?: Error;

  private constructor(
    private readonly cacheDir: string,
    private readonly volumeId: string,
    private readonly epoch: number,
    firstJseq: number,
  ) {
    this.jseq = firstJseq;
  }

  static async create(cacheDir: string, volumeId: string, epoch: number, firstJseq: number): Promise<Journal> {
    const j = new Journal(cacheDir, volumeId, epoch, firstJseq);
    await j.newFile();
    return j;
  }

  get lastJseq(): number {
    return this.jseq;
  }

  private async newFile(): Promise<JournalFile> {
    const path = join(this.cacheDir, `${prefixOf(this.volumeId)}${Date.now()}${String(this.next++).padStart(6, "0")}`);
    const handle = await open(path, "wx", 0o600);
    const f = { path, handle, bytes: 0, maxJseq: 0 };
    this.files.push(f);
    return f;
  }

  /** Appends an entry (in order, after those before it) and returns its sequence number. */
  append(kind: JournalKind, offset: number, length: number, data?: Buffer): number {
    const jseq = ++this.jseq;
    const header = Buffer.alloc(ENTRY_HEADER);
    header.writeUInt32BE(MAGIC, 0);
    header.writeDoubleBE(jseq, 4);
    header.writeDoubleBE(offset, 12);
    header.writeUInt32BE(length, 20);
    header[24] = KIND_CODE[kind];
    header.writeUInt32BE(data ? crc32(data) : 0, 25);
    header.writeDoubleBE(this.epoch, 29);
    const copy = data ? Buffer.from(data) : undefined;
    this.writing = this.writing.then(async () => {
      if (this.failed) return;
      let f = this.files[this.files.length - 1];
      if (f.bytes >= JOURNAL_FILE_BYTES) f = await this.newFile();
      const parts = copy ? [header, copy] : [header];
      await f.handle.writev(parts).catch((err: Error) => {
        this.failed = new BackendError(`the local journal ${f.path} cannot be written: ${err.message}`);
      });
      f.bytes += header.length + (copy?.length ?? 0);
      f.maxJseq = jseq;
    });
    return jseq;
  }

  /** Everything appended so far is on disk. */
  async sync(): Promise<void> {
    await this.writing;
    if (this.failed) throw this.failed;
    const f = this.files[this.files.length - 1];
    await f.handle.datasync();
  }

  /** Files whose every entry is committed in the store go. */
  async committed(jseq: number): Promise<void> {
    await this.writing;
    while (this.files.length > 1 && this.files[0].maxJseq <= jseq) {
      const f = this.files.shift() as JournalFile;
      await f.handle.close();
      removeJournals([f.path]);
    }
  }

  /** A clean close: everything is committed, so the journal goes. */
  async remove(): Promise<void> {
    await this.writing;
    for (const f of this.files) {
      await f.handle.close().catch(() => undefined);
      removeJournals([f.path]);
    }
    this.files = [];
  }
}
