import { fdatasync, fstat, read, write, type Stats } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import type { BlockDevice, BlockDeviceCapabilities, Extent, NativeTarget } from "../contract";
import { checkRange, checkWritable } from "../ranges";
import { fileExtents } from "./extents";
import { descriptorPath, openPoolFile, type PoolObject } from "./poolfile";
import { run } from "../../util/run";

// The callback forms of fs, wrapped by hand: on the NBD hot path they cost far less per call
// than fs.promises' FileHandle methods. They work on the descriptor of the FileHandle that
// owns it (and closes it).
const call = <T>(fn: (done: (err: NodeJS.ErrnoException | null, value: T) => void) => void) =>
  new Promise<T>((resolve, reject) => fn((err, value) => (err ? reject(err) : resolve(value))));

/**
 * A raw file as a block device. Snapshots and read-only exports open it read-only. The device
 * has the size the records hold, which the file may not have (a file shortened behind
 * kindling's back, an extend rolled back while the device was open): what lies past the file's
 * end reads as zeroes, never as whatever the caller's buffer held before.
 */
export class FileBlockDevice implements BlockDevice {
  readonly capabilities: BlockDeviceCapabilities;
  private closed = false;

  private constructor(
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

  /**
   * Opens `path` (never through a link; see poolfile.ts) as a device of `size` bytes; without
   * a size, the file's size now. `owner` names the volume or snapshot in errors.
   */
  static async open(path: string, readOnly: boolean, opts: { size?: number; owner?: PoolObject } = {}): Promise<FileBlockDevice> {
    const handle = await openPoolFile(path, readOnly ? "read" : "write", opts.owner);
    try {
      return FileBlockDevice.over(handle, opts.size ?? (await handle.stat()).size, readOnly);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /** A device over a file already open; closing the device closes the handle. */
  static over(handle: FileHandle, size: number, readOnly: boolean): FileBlockDevice {
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`device size ${size} is not a byte count`);
    return new FileBlockDevice(handle, size, readOnly);
  }

  private get fd(): number {
    return this.handle.fd;
  }

  /** Every method below is a plain system call on its descriptor (see NativeTarget). */
  get native(): NativeTarget | undefined {
    return this.closed ? undefined : { kind: "file", descriptor: this.handle.fd };
  }

  private check(offset: number, length: number): void {
    checkRange(this.size, offset, length);
  }

  private checkWritable(): void {
    checkWritable(this.readOnly);
  }

  private async fileSize(): Promise<number> {
    return (await call<Stats>((done) => fstat(this.fd, done))).size;
  }

  /** Always fills the whole buffer: bytes past the file's end read as zeroes. */
  async pread(buffer: Buffer, offset: number): Promise<number> {
    this.check(offset, buffer.length);
    let done = 0;
    while (done < buffer.length) {
      const n = await call<number>((cb) => read(this.fd, buffer, done, buffer.length - done, offset + done, cb));
      if (n === 0) break;
      done += n;
    }
    // The file ends before the device does; the caller's buffer may be recycled memory.
    if (done < buffer.length) buffer.fill(0, done);
    return buffer.length;
  }

  async pwrite(buffer: Buffer, offset: number, opts: { fua?: boolean } = {}): Promise<void> {
    this.checkWritable();
    this.check(offset, buffer.length);
    let done = 0;
    while (done < buffer.length) {
      done += await call<number>((cb) => write(this.fd, buffer, done, buffer.length - done, offset + done, cb));
    }
    if (opts.fua) await this.flush();
  }

  async flush(): Promise<void> {
    if (!this.readOnly) await call<void>((done) => fdatasync(this.fd, (e) => done(e, undefined)));
  }

  async trim(offset: number, length: number): Promise<void> {
    this.checkWritable();
    this.check(offset, length);
    if (length === 0) return;
    await run("fallocate", ["--punch-hole", "--keep-size", "--offset", String(offset), "--length", String(length), descriptorPath(this.handle)]);
  }

  async zero(offset: number, length: number, opts: { mayTrim?: boolean } = {}): Promise<void> {
    this.checkWritable();
    this.check(offset, length);
    // Past the file's end already reads as zeroes; zeroing there would allocate blocks beyond
    // the end (--keep-size) that nothing can ever read.
    const inFile = Math.min(length, (await this.fileSize()) - offset);
    if (inFile <= 0) return;
    const mode = opts.mayTrim ? ["--punch-hole", "--keep-size"] : ["--zero-range", "--keep-size"];
    await run("fallocate", [...mode, "--offset", String(offset), "--length", String(inFile), descriptorPath(this.handle)]);
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    this.check(offset, length);
    return fileExtents(descriptorPath(this.handle), offset, length);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }
}
