import { Backend } from "../../provider/library";
import { MemoryPersistence } from "../../provider/persistence/memory";
import { SqlitePersistence } from "../../provider/persistence/sqlite";
import type { Persistence } from "../../provider/persistence/contract";
import { join } from "node:path";
import { tempDir } from "./env";

export type PersistenceKind = "memory" | "sqlite";

/** A file backend in a fresh temp dir, with the chosen persistence. */
export async function fileBackend(kind: PersistenceKind = "memory", settings: Record<string, unknown> = {}): Promise<{ backend: Backend; dir: string; persistence: Persistence }> {
  const dir = tempDir();
  const persistence: Persistence = kind === "memory" ? new MemoryPersistence() : new SqlitePersistence(join(dir, "records", "kindling.db"));
  const backend = await Backend.open({ name: "test", driver: "file", path: join(dir, "volumes"), ...settings }, { persistence });
  return { backend, dir, persistence };
}

/** Writes `data` at `offset` through the volume's block device. */
export async function writeAt(volume: { open(o?: { readOnly?: boolean }): Promise<import("../../provider/drivers/contract").BlockDevice> }, data: Buffer, offset = 0): Promise<void> {
  const device = await volume.open();
  try {
    await device.pwrite(data, offset);
    await device.flush();
  } finally {
    await device.close();
  }
}

/** Reads `length` bytes at `offset` through the block device. */
export async function readAt(volume: { open(o?: { readOnly?: boolean }): Promise<import("../../provider/drivers/contract").BlockDevice> }, length: number, offset = 0): Promise<Buffer> {
  const device = await volume.open({ readOnly: true });
  try {
    const buffer = Buffer.alloc(length);
    await device.pread(buffer, offset);
    return buffer;
  } finally {
    await device.close();
  }
}
