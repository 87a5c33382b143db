import { execa } from "execa";
import { BackendError } from "../util/errors";
import { commandLine } from "../util/run";
import { logger } from "../util/log";
import type { QemuEndpoint } from "./qemu-endpoint";

// `qemu-img convert` between an image file and a volume, in either direction. The whole stack
// of each side is spelled out (`--image-opts`, `--target-image-opts`, `-f`/`-O`), so nothing is
// probed; it runs under prlimit (a crafted image that got past the checks still cannot take
// the machine's memory); descriptors a driver handed over are inherited as fd 3 on; progress
// comes from `-p`, as fractions.

/** Memory is bounded; CPU time is not (a 100 GiB image takes what it takes, and the wall clock is the caller's). */
export const QEMU_CONVERT_LIMITS = { addressSpaceBytes: 4 * 1024 ** 3 };

/** One side of a conversion: an image file of a known format, or a volume's endpoint (raw). */
export type ConvertSide = { path: string; format: string } | { endpoint: QemuEndpoint };

export interface ConvertOptions {
  /** The target is a new volume: it reads as zeroes, so qemu-img writes no zeroes into it. */
  targetIsZero?: boolean;
  /** A new image file's creation options (`-o subformat=streamOptimized`), and qcow2's `-c`. */
  createOptions?: string[];
  compress?: boolean;
  onProgress?: (fraction: number) => void;
  signal?: AbortSignal;
}

/** The argument vector after `qemu-img`. */
export function convertArgs(source: ConvertSide, target: ConvertSide, opts: ConvertOptions = {}): string[] {
  const args = ["convert", "-p"];
  const endpoints = [source, target].flatMap((s) => ("endpoint" in s ? [s.endpoint] : []));
  for (const e of endpoints) for (const o of e.objects) args.push("--object", o);
  if ("endpoint" in source) args.push("--image-opts");
  else args.push("-f", source.format);
  if ("endpoint" in target) {
    // An existing target, named with its whole stack: -n, and no -O.
    args.push("--target-image-opts", "-n");
    if (opts.targetIsZero) args.push("--target-is-zero");
  } else {
    args.push("-O", target.format);
    if (opts.compress) args.push("-c");
    for (const o of opts.createOptions ?? []) args.push("-o", o);
  }
  // Out-of-order writes: a volume is not a stream (a streamOptimized vmdk or compressed qcow2 is).
  if ("endpoint" in target) args.push("-W");
  args.push("endpoint" in source ? source.endpoint.imageOpts : source.path);
  args.push("endpoint" in target ? target.endpoint.imageOpts : target.path);
  return args;
}

export async function qemuImgConvert(source: ConvertSide, target: ConvertSide, opts: ConvertOptions = {}): Promise<void> {
  const args = ["--as=" + QEMU_CONVERT_LIMITS.addressSpaceBytes, "--", "qemu-img", ...convertArgs(source, target, opts)];
  const fds = [source, target].flatMap((s) => ("endpoint" in s ? s.endpoint.fds : []));
  const shown = commandLine("prlimit", args);
  logger().debug({ command: shown }, "run");
  const child = execa("prlimit", args, {
    // fd 3 on: what the endpoints handed over, in the order their options name them.
    // (execa's types list only stream-like extras; a plain descriptor is what Node's spawn takes.)
    stdio: ["ignore", "pipe", "pipe", ...(fds as unknown as "inherit"[])],
    reject: false,
    env: { LC_ALL: "C" },
    cancelSignal: opts.signal,
  });
  let partial = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    partial += chunk.toString("latin1");
    const pieces = partial.split(/[\r\n]/);
    partial = pieces.pop() ?? "";
    for (const piece of pieces) {
      const m = /\((\d+(?:\.\d+)?)\/100%\)/.exec(piece);
      if (m) opts.onProgress?.(Number(m[1]) / 100);
    }
  });
  const result = await child;
  if (result.exitCode !== 0) {
    const stderr = String(result.stderr ?? "").trim();
    throw new BackendError(`qemu-img convert failed${result.signal ? ` (${result.signal})` : ""}: ${stderr.split("\n").slice(-3).join(" ") || `exit ${result.exitCode}`}`, { command: shown });
  }
}
