import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { BlockDevice, BlockDeviceCapabilities, Extent } from "../contract";
import { checkRange, checkWritable } from "../ranges";
import { NbdClient, NbdRequestError } from "../../util/nbd/client";
import { Tx } from "../../util/nbd/protocol";
import { BackendError, isErrno } from "../../util/errors";
import { privateDir, removePrivateDir, type CephAccess } from "./ceph";

export interface RbdTarget {
  pool: string;
  image: string;
  snapshot?: string;
}

/** An extent as `rbd diff` lists it: allocated data only; what it leaves out reads as zeroes. */
interface DiffEntry {
  offset: number;
  length: number;
  exists: string;
}

/**
 * An RBD image (or one of its snapshots) as a block device. librbd has no binding in Node, so
 * each open runs a private `qemu-nbd` over the image on a Unix socket in a 0700 directory and
 * talks NBD to it; the key reaches qemu-nbd through a secret object that reads the key file.
 * qemu-nbd serves this one connection and exits when it closes.
 */
export class RbdBlockDevice implements BlockDevice {
  readonly capabilities: BlockDeviceCapabilities;
  private closed = false;

  private constructor(
    private readonly ceph: CephAccess,
    private readonly target: RbdTarget,
    private readonly client: NbdClient,
    private readonly server: ChildProcess,
    private readonly dir: string,
    readonly readOnly: boolean,
  ) {
    this.capabilities = {
      canWrite: !readOnly,
      canFlush: !readOnly && client.can(Tx.SEND_FLUSH),
      canTrim: !readOnly && client.can(Tx.SEND_TRIM),
      canZero: !readOnly && client.can(Tx.SEND_WRITE_ZEROES),
      canExtents: true,
      // Each open is its own librbd client with its own cache: a flush on one does not cover another.
      canMultiConn: false,
    };
  }

  get size(): number {
    return this.client.size;
  }

  static async open(ceph: CephAccess, target: RbdTarget, readOnly: boolean): Promise<RbdBlockDevice> {
    const dir = privateDir("qemu-nbd-");
    const socket = join(dir, "nbd.sock");
    const file: Record<string, unknown> = { driver: "rbd", pool: target.pool, image: target.image, conf: ceph.confPath, user: ceph.user };
    if (target.snapshot) file.snapshot = target.snapshot;
    if (ceph.keyFile) file["key-secret"] = "kindling-key";
    const args = [
      ...(ceph.keyFile ? ["--object", `secret,id=kindling-key,file=${ceph.keyFile},format=base64`] : []),
      "--format", "raw", "--socket", socket, "--discard", "unmap",
      ...(readOnly || target.snapshot ? ["--read-only"] : []),
      `json:${JSON.stringify({ driver: "raw", file })}`,
    ];
    const server = spawn("qemu-nbd", args, { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    let exited: string | undefined;
    server.stderr?.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    server.once("error", (err) => (exited = err.message));
    server.once("exit", (code, signal) => (exited ??= `exited with ${code ?? signal}`));
    const spec = `${target.pool}/${target.image}${target.snapshot ? `@${target.snapshot}` : ""}`;
    try {
      // qemu-nbd opens the image first, then makes its socket file, then listens: until it
      // listens a connect finds no file (ENOENT) or is refused (ECONNREFUSED), and is tried again.
      const deadline = Date.now() + 60_000;
      for (;;) {
        if (exited !== undefined) {
          const reason = `${exited}${stderr ? `: ${stderr.trim()}` : ""}`;
          throw new BackendError(`cannot open RBD image ${spec}: qemu-nbd ${reason}`, {
            stderr,
            hint: /Permission denied|Operation not permitted|auth/i.test(stderr)
              ? "check the Ceph user, its key and its caps on the pool"
              : /No such file/i.test(stderr) ? "the image or snapshot does not exist" : "is qemu-block-extra installed and the cluster up?",
          });
        }
        if (Date.now() > deadline) throw new BackendError(`cannot open RBD image ${spec}: qemu-nbd did not start within 60 s`, { stderr });
        try {
          const client = await NbdClient.connect(socket);
          return new RbdBlockDevice(ceph, target, client, server, dir, readOnly || Boolean(target.snapshot));
        } catch (err) {
          if (!isErrno(err, "ENOENT", "ECONNREFUSED")) throw err;
        }
        await sleep(20);
      }
    } catch (err) {
      server.kill("SIGKILL");
      removePrivateDir(dir);
      throw err;
    }
  }

  private check(offset: number, length: number): void {
    checkRange(this.size, offset, length);
  }

  private checkWritable(): void {
    checkWritable(this.readOnly);
  }

  /** NBD errors become errno-style errors, as the file device's are. */
  private async io<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      if (err instanceof NbdRequestError) {
        const code = err.errno === 28 ? "ENOSPC" : err.errno === 1 ? "EPERM" : err.errno === 22 ? "EINVAL" : "EIO";
        throw Object.assign(new Error(`RBD image ${this.target.pool}/${this.target.image}: ${err.command} failed (${code})`), { code, errno: err.errno });
      }
      throw err;
    }
  }

  async pread(buffer: Buffer, offset: number): Promise<number> {
    this.check(offset, buffer.length);
    await this.io(() => this.client.pread(buffer, offset));
    return buffer.length;
  }

  async pwrite(buffer: Buffer, offset: number, opts: { fua?: boolean } = {}): Promise<void> {
    this.checkWritable();
    this.check(offset, buffer.length);
    await this.io(() => this.client.pwrite(buffer, offset, Boolean(opts.fua) && this.client.can(Tx.SEND_FUA)));
    if (opts.fua && !this.client.can(Tx.SEND_FUA)) await this.flush();
  }

  async flush(): Promise<void> {
    if (!this.readOnly) await this.io(() => this.client.flush());
  }

  async trim(offset: number, length: number): Promise<void> {
    this.checkWritable();
    this.check(offset, length);
    if (length) await this.io(() => this.client.trim(offset, length));
  }

  async zero(offset: number, length: number, opts: { mayTrim?: boolean } = {}): Promise<void> {
    this.checkWritable();
    this.check(offset, length);
    if (length) await this.io(() => this.client.zero(offset, length, Boolean(opts.mayTrim)));
  }

  /** Allocation from `rbd diff` (object-map makes it cheap); a clone's parent data counts as data. */
  async extents(offset: number, length: number): Promise<Extent[]> {
    this.check(offset, length);
    if (length === 0) return [];
    const spec = `${this.target.pool}/${this.target.image}${this.target.snapshot ? `@${this.target.snapshot}` : ""}`;
    const entries = (await this.ceph.rbdJson<DiffEntry[]>(["diff", spec], `list the allocation of ${spec}`)) ?? [];
    const end = offset + length;
    const out: Extent[] = [];
    let at = offset;
    const push = (from: number, to: number, hole: boolean) => {
      if (to <= from) return;
      const last = out[out.length - 1];
      if (last && last.hole === hole && last.offset + last.length === from) last.length += to - from;
      else out.push({ offset: from, length: to - from, hole, zero: hole });
    };
    for (const e of entries.filter((x) => x.exists === "true").sort((a, b) => a.offset - b.offset)) {
      const from = Math.max(e.offset, offset);
      const to = Math.min(e.offset + e.length, end);
      if (to <= from) continue;
      push(at, from, true);
      push(Math.max(at, from), to, false);
      at = Math.max(at, to);
    }
    push(at, end, true);
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.client.close();
    } finally {
      // qemu-nbd exits once its one client has gone; give it a moment, then make sure.
      const gone = new Promise<void>((resolve) => (this.server.exitCode !== null || this.server.signalCode !== null ? resolve() : this.server.once("exit", () => resolve())));
      await Promise.race([gone, sleep(5000)]);
      if (this.server.exitCode === null && this.server.signalCode === null) this.server.kill("SIGKILL");
      removePrivateDir(this.dir);
    }
  }
}
