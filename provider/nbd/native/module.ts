import { resolve } from "node:path";
import { logger } from "../../util/log";

/** What the native module (transmission.c, built by `make setup`) reports when a connection ends. */
export interface NativeReport {
  requests: number;
  /** The client broke the protocol (a bad request magic, a write over the maximum payload). */
  clientError: boolean;
  /** The socket failed (rather than the client disconnecting). */
  socketError?: string;
}

export interface NativeServeOptions {
  socket: number;
  /** What it serves from: a file's descriptor (the caller's; never closed there), or an image rbdOpen() opened (the connection's from then on). */
  device?: number;
  rbd?: object;
  size: number;
  readOnly: boolean;
  structured: boolean;
  allocation: boolean;
  maxPayload: number;
  threads: number;
  prefix: Buffer;
}

/** An RBD image to open through librbd (rbd.c); the key is read from `keyFile`, never passed. */
export interface RbdOpenOptions {
  conf: string;
  user: string;
  keyFile?: string;
  pool: string;
  image: string;
  snapshot?: string;
  readOnly: boolean;
  timeoutSeconds: number;
}

export interface NativeTransmissionModule {
  serve(options: NativeServeOptions, onDone: (report: NativeReport) => void): object;
  stop(handle: object): void;
  abort(handle: object): void;
  /** Opens an image on libuv's thread pool; `errno` on the error says why it could not. */
  rbdOpen(options: RbdOpenOptions, onDone: (err: (Error & { errno: number }) | undefined, opened?: { handle: object; size: number }) => void): void;
  /** Closes an image opened and not handed to serve(). */
  rbdClose(handle: object): void;
  /** null when librbd can be loaded (KINDLING_LIBRBD names another), else why not. */
  rbdAvailable(): string | null;
}

// Where `make setup` puts it: dist/native, beside dist/provider.
const BUILT = resolve(__dirname, "..", "..", "..", "native", "nbd-transmission.node");

let loaded: { module?: NativeTransmissionModule } | undefined;

/**
 * The native data path, or undefined when it is turned off (KINDLING_NBD_NATIVE=off) or cannot
 * be loaded (not built: no compiler on the machine; a module for another Node). Then every
 * connection is served by the JavaScript transmission, which does all the same at its own speed;
 * a missing module is said once, in the log. KINDLING_NBD_NATIVE_MODULE names another file.
 */
export function nativeTransmission(): NativeTransmissionModule | undefined {
  if (process.env.KINDLING_NBD_NATIVE === "off") return undefined;
  if (!loaded) {
    const path = process.env.KINDLING_NBD_NATIVE_MODULE || BUILT;
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const module = require(path) as NativeTransmissionModule;
      if (typeof module.serve !== "function" || typeof module.stop !== "function" || typeof module.abort !== "function" || typeof module.rbdOpen !== "function") {
        throw new Error("it has no serve(), stop(), abort() and rbdOpen()");
      }
      loaded = { module };
    } catch (err) {
      loaded = {};
      logger().warn({ module: path, err: (err as Error).message.split("\n")[0] }, "the native NBD data path cannot be loaded; connections are served by the JavaScript one");
    }
  }
  return loaded.module;
}
