import { createReadStream, promises as fs } from "node:fs";
import type { Readable } from "node:stream";
import { InvalidInputError, NotFoundError } from "../../util/errors";
import type { Digest } from "../digest";
import type { ImageSource, SourceDescription } from "./source";

// An image in a local file (`file:PATH`). Regular files only: a device or a FIFO read as an
// image would hand out whatever is behind it, and a FIFO cannot be read twice.

export class FileSource implements ImageSource {
  constructor(
    private readonly path: string,
    private readonly expect: Digest[] = [],
    private readonly field = "image",
  ) {}

  private async stat() {
    try {
      return await fs.stat(this.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new NotFoundError("image file", this.path, { field: this.field });
      throw new InvalidInputError(this.field, `cannot read ${this.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }

  pinnedDigests(): Digest[] {
    return [...this.expect];
  }

  async describe(): Promise<SourceDescription> {
    const st = await this.stat();
    if (!st.isFile()) throw new InvalidInputError(this.field, `${this.path} is not a regular file`);
    const vouched = this.expect[0];
    return {
      // Without a digest: the same inode unchanged since (size and mtime) is the same bytes.
      identity: vouched ? `${vouched.algo}:${vouched.value}` : `file:${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`,
      sizeBytes: st.size,
      expect: [...this.expect],
      rangeable: true,
      where: this.path,
      origin: { kind: "file", location: this.path },
    };
  }

  async open(opts: { offset?: number; signal?: AbortSignal } = {}): Promise<Readable> {
    const st = await this.stat();
    if (!st.isFile()) throw new InvalidInputError(this.field, `${this.path} is not a regular file`);
    return createReadStream(this.path, { start: opts.offset ?? 0, signal: opts.signal, highWaterMark: 1024 * 1024 });
  }
}
