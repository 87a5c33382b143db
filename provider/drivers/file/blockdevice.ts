import { open, type FileHandle } from "node:fs/promises";
import type { BlockDevice, BlockDeviceCapabilities, Extent } from "../contract";
import { fileExtents } from "./extents";
import { run } from "../../util/run";
import { InvalidInputError } from "../../util/errors";

/** A raw file as a block device. Snapshots and read-only exports open it with O_RDONLY. */
export class FileBlockDevice implements BlockDevice {
  readonly capabilities: BlockDeviceCapabilities;

  private constructor(
    private readonly path: string,
    private readonly handle: FileHandle,
    readonly size: number,
    readonly readOnly: boolean,
  ) {
    this.capabilities = {
      canWrite: !readOnly,
      canFlush: !readOnly,
      canTrim: !readOnly,
      canZero: !readOnly,
      canExtents: true,
      // Every open goes through the same page cache, and fsync on one handle flushes the file.
      canMultiConn: true,
    };
  }

  static async open(path: string, readOnly: boolean): Promise<FileBlockDevice> {
    const handle = await open(path, readOnly ? "r" : "r+");
    try {
      const { size } = await handle.stat();
      return new FileBlockDevice(path, handle, size, readOnly);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  private check(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0 || offset + length > this.size) {
      throw new InvalidInputError("offset", `range ${offset}+${length} is outside the device (size ${this.size})`);
    }
  }

  private checkWritable(): void {
    if (this.readOnly) throw new InvalidInputError("mode", "the device is open read-only");
  }

  async pread(buffer: Buffer, offset: number): Promise<number> {
    this.check(offset, buffer.length);
    let done = 0;
    while (done < buffer.length) {
      const { bytesRead } = await this.handle.read(buffer, done, buffer.length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done;
  }

  async pwrite(buffer: Buffer, offset: number, opts: { fua?: boolean } = {}): Promise<void> {
    this.checkWritable();
    this.check(offset, buffer.length);
    let done = 0;
    while (done < buffer.length) {
      const { bytesWritten } = await this.handle.write(buffer, done, buffer.length - done, offset + done);
      done += bytesWritten;
    }
    if (opts.fua) await this.handle.datasync();
  }

  async flush(): Promise<void> {
    if (!this.readOnly) await this.handle.datasync();
  }

  async trim(offset: number, length: number): Promise<void> {
    this.checkWritable();
    this.check(offset, length);
    if (length === 0) return;
    await run("fallocate", ["--punch-hole", "--keep-size", "--offset", String(offset), "--length", String(length), this.path]);
  }

  async zero(offset: number, length: number, opts: { mayTrim?: boolean } = {}): Promise<void> {
    this.checkWritable();
    this.check(offset, length);
    if (length === 0) return;
    const mode = opts.mayTrim ? ["--punch-hole", "--keep-size"] : ["--zero-range", "--keep-size"];
    await run("fallocate", [...mode, "--offset", String(offset), "--length", String(length), this.path]);
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    this.check(offset, length);
    return fileExtents(this.path, offset, length);
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
