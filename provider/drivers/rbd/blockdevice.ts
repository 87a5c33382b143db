import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { BlockDevice, BlockDeviceCapabilities, Extent, NativeTarget } from "../contract";
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

/** The image or snapshot as rbd names it: pool/image[@snapshot]. */
function specOf(target: RbdTarget): string {
  return `${target.pool}/${target.image}${target.snapshot ? `@${target.snapshot}` : ""}`;
}

/** An extent as `rbd diff` lists it: allocated data only; what it leaves out reads as zeroes. */
interface DiffEntry {
  offset: number;
  length: number;
  exists: string;
}

/** The private qemu-nbd behind a device's methods, and the NBD client talking to it. */
interface PrivateServer {
  client: NbdClient;
  server: ChildProcess;
  dir: string;
}

/**
 * An RBD image (or one of its snapshots) as a block device. librbd has no binding in Node, so
 * the methods below go through a private `qemu-nbd` over the image on a Unix socket in a 0700
 * directory, and talk NBD to it; the key reaches qemu-nbd through a secret object that reads
 * the key file. qemu-nbd serves this one connection and exits when it closes.
 *
 * That qemu-nbd starts on the first call that needs it, not at open: the NBD server's native
 * path serves the image through librbd itself (`native`), and a qemu-nbd beside it would be one
 * more process holding the image, and one more writer for its exclusive lock. Opening reads the
 * image's size from the cluster (`rbd info`), which also says the image or snapshot exists.
 */
export class RbdBlockDevice implements BlockDevice {
  readonly capabilities: BlockDeviceCapabilities;
  readonly native: NativeTarget;
  private closed = false;
  private started?: Promise<PrivateServer>;

  private constructor(
    private readonly ceph: CephAccess,
    private readonly target: RbdTarget,
    readonly size: number,
    readonly readOnly: boolean,
  ) {
    this.capabilities = {
      canWrite: !readOnly,
      // qemu-nbd offers all three on a writable image (--discard unmap).
      canFlush: !readOnly,
      canTrim: !readOnly,
      canZero: !readOnly,
      canExtents: true,
      // Each open is its own librbd client with its own cache: a flush on one does not cover another.
      canMultiConn: false,
    };
    this.native = {
      kind: "rbd", conf: ceph.confPath, user: ceph.user, keyFile: ceph.keyFile, timeoutSeconds: ceph.timeoutSeconds,
      pool: target.pool, image: target.image, snapshot: target.snapshot,
    };
  }

  private get spec(): string {
    return specOf(this.target);
  }

  static async open(ceph: CephAccess, target: RbdTarget, readOnly: boolean): Promise<RbdBlockDevice> {
    const spec = specOf(target);
    const info = await ceph.rbdJson<{ size: number }>(["info", spec], `open RBD image ${spec}`);
    return new RbdBlockDevice(ceph, target, info.size, readOnly || Boolean(target.snapshot));
  }

  /** The private qemu-nbd, started on first use. */
  private connection(): Promise<NbdClient> {
    if (this.closed) return Promise.reject(new Error(`RBD image ${this.spec}: the device is closed`));
    this.started ??= startPrivateServer(this.ceph, this.target, this.readOnly);
    return this.started.then((s) => s.client);
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
    const client = await this.connection();
    await this.io(() => client.pread(buffer, offset));
    return buffer.length;
  }

  async pwrite(buffer: Buffer, offset: number, opts: { fua?: boolean } = {}): Promise<void> {
    this.checkWritable();
    this.check(offset, buffer.length);
    const client = await this.connection();
    await this.io(() => client.pwrite(buffer, offset, Boolean(opts.fua) && client.can(Tx.SEND_FUA)));
    if (opts.fua && !client.can(Tx.SEND_FUA)) await this.flush();
  }

  async flush(): Promise<void> {
    // Nothing was written through a qemu-nbd that never started: nothing to flush.
    if (this.readOnly || !this.started) return;
    const client = await this.connection();
    await this.io(() => client.flush());
  }

  async trim(offset: number, length: number): Promise<void> {
    this.checkWritable();
    this.check(offset, length);
    if (!length) return;
    const client = await this.connection();
    await this.io(() => client.trim(offset, length));
  }

  async zero(offset: number, length: number, opts: { mayTrim?: boolean } = {}): Promise<void> {
    this.checkWritable();
    this.check(offset, length);
    if (!length) return;
    const client = await this.connection();
    await this.io(() => client.zero(offset, length, Boolean(opts.mayTrim)));
  }

  /** Allocation from `rbd diff` (object-map makes it cheap); a clone's parent data counts as data. */
  async extents(offset: number, length: number): Promise<Extent[]> {
    this.check(offset, length);
    if (length === 0) return [];
    const spec = this.spec;
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
    const started = await this.started?.catch(() => undefined);
    if (started) await stopPrivateServer(started);
  }
}

/** qemu-nbd over the image on a Unix socket in a private directory, and a client connected to it. */
async function startPrivateServer(ceph: CephAccess, target: RbdTarget, readOnly: boolean): Promise<PrivateServer> {
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
  const spec = specOf(target);
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
        return { client: await NbdClient.connect(socket), server, dir };
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

async function stopPrivateServer({ client, server, dir }: PrivateServer): Promise<void> {
  try {
    await client.close();
  } finally {
    // qemu-nbd exits once its one client has gone; give it a moment, then make sure.
    const gone = new Promise<void>((resolve) => (server.exitCode !== null || server.signalCode !== null ? resolve() : server.once("exit", () => resolve())));
    await Promise.race([gone, sleep(5000)]);
    if (server.exitCode === null && server.signalCode === null) server.kill("SIGKILL");
    removePrivateDir(dir);
  }
}
