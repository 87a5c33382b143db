import type { Socket } from "node:net";
import type { BlockDevice } from "../../drivers/contract";
import { MAX_PAYLOAD } from "../../util/nbd/protocol";
import type { SocketReader } from "../../util/nbd/reader";
import type { NativeDevice } from "./devices";
import type { NativeReport, NativeTransmissionModule } from "./module";

function threadsFrom(name: string, fallback: number): number {
  const n = Number(process.env[name] ?? fallback);
  return Number.isInteger(n) && n >= 1 && n <= 64 ? n : fallback;
}

// Threads per connection on a file (KINDLING_NBD_THREADS, 1-64). More than one, so that a pwrite
// held by writeback does not hold every request behind it; bench/README.md has what 2 to 16 measured.
const THREADS = threadsFrom("KINDLING_NBD_THREADS", 4);
// On an RBD image (KINDLING_NBD_RBD_THREADS): each librbd call waits a network round trip to the
// OSD, so a thread per request a client keeps in flight (fio and qemu keep 16, nbdcopy 16-64).
const RBD_THREADS = threadsFrom("KINDLING_NBD_RBD_THREADS", 16);

// How long a stopped connection may take to send its last replies: a client that stopped
// reading would otherwise hold a thread in sendmsg, and the server's close, forever. The
// JavaScript path's socket gets the same wait (server.ts, endGracefully).
const STOP_GRACE_MS = 2000;

/**
 * The transmission phase of one connection in native threads (transmission.c), for a device
 * the native side reaches by itself (devices.ts: a file by descriptor, an RBD image through
 * librbd). It answers as the JavaScript Transmission does, request for request; the socket
 * passes to the native side, so `socket` is destroyed here (its descriptor only: the connection
 * stays open on the native side's own).
 */
export class NativeTransmission {
  private handle?: object;
  private report?: Promise<NativeReport>;
  private stopped = false;
  private finished = false;
  private grace?: NodeJS.Timeout;

  constructor(
    private readonly module: NativeTransmissionModule,
    private readonly socket: Socket,
    private readonly reader: SocketReader,
    private readonly device: BlockDevice,
    private readonly target: NativeDevice,
    private readonly opts: { readOnly: boolean; structured: boolean; allocationContext: boolean },
  ) {}

  /** Whether `socket` can be handed over: a plain TCP or unix socket with a descriptor, its replies sent. */
  static canTakeOver(socket: Socket): boolean {
    const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    return typeof fd === "number" && fd >= 0 && socket.writableLength === 0 && !socket.destroyed;
  }

  /** Serves the connection until the client disconnects or `stop()`; resolves with the native side's report. */
  async run(): Promise<NativeReport> {
    const fd = (this.socket as unknown as { _handle: { fd: number } })._handle.fd;
    const prefix = this.reader.detach();
    this.report = new Promise<NativeReport>((resolve) => {
      this.handle = this.module.serve(
        {
          socket: fd,
          ...this.target,
          size: this.device.size,
          readOnly: this.opts.readOnly,
          structured: this.opts.structured,
          allocation: this.opts.allocationContext,
          maxPayload: MAX_PAYLOAD,
          threads: this.target.rbd ? RBD_THREADS : THREADS,
          prefix,
        },
        (report) => {
          this.finished = true;
          clearTimeout(this.grace);
          resolve(report);
        },
      );
    });
    // The native side has its own duplicate; this one goes, with no bytes sent or read.
    this.socket.destroy();
    if (this.stopped) this.stop();
    return this.report;
  }

  /**
   * Stops reading requests; those in flight are answered and the connection closed (see
   * drain). Replies not sent within STOP_GRACE_MS are given up: the connection is cut.
   */
  stop(): void {
    this.stopped = true;
    const handle = this.handle;
    if (!handle || this.finished) return;
    this.module.stop(handle);
    this.grace ??= setTimeout(() => {
      if (!this.finished) this.module.abort(handle);
    }, STOP_GRACE_MS);
  }

  /** Waits for the native side to finish: every request answered, the device flushed, the socket closed. */
  async drain(): Promise<void> {
    await this.report;
  }
}
