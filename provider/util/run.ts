// execa is loaded on the first command run: loading it costs a process about 20 MiB of memory
// (it is an ES module with its own dependencies), which a daemon that never runs one should not pay.
const execaModule = () => require("execa") as typeof import("execa");
import { BackendError, NoSpaceError } from "./errors";
import { logger } from "./log";

export interface RunOptions {
  /** Written to the command's stdin (how secrets reach tools that can read them there). */
  input?: string | Buffer;
  /** Extra environment; merged over the process environment. */
  env?: Record<string, string>;
  /** Values masked wherever the command line or its output is shown. */
  secrets?: string[];
  timeoutMs?: number;
  /** Return the result instead of throwing when the command exits non-zero. */
  reject?: boolean;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

function mask(text: string, secrets: string[]): string {
  let out = text;
  for (const secret of secrets) if (secret) out = out.split(secret).join("[secret]");
  return out;
}

/** Shown form of a command line; arguments are quoted only when they need it. */
export function commandLine(command: string, args: readonly string[], secrets: string[] = []): string {
  const quote = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
  return mask([command, ...args].map(quote).join(" "), secrets);
}

/**
 * Runs an external tool with an argument array, never through a shell. A failure becomes a
 * BackendError that carries the (masked) command line and the tool's stderr.
 */
export async function run(command: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const secrets = opts.secrets ?? [];
  const shown = commandLine(command, args, secrets);
  logger().debug({ command: shown }, "run");
  let result;
  try {
    result = await execaModule().execa(command, args, {
      input: opts.input,
      env: opts.env,
      timeout: opts.timeoutMs,
      reject: false,
      stripFinalNewline: true,
    });
  } catch (err) {
    throw new BackendError(`could not run ${command}`, { command: shown, cause: err });
  }
  const stdout = String(result.stdout ?? "");
  const stderr = mask(String(result.stderr ?? ""), secrets);
  if (result.failed && opts.reject !== false) {
    if (result.code === "ENOENT" || (result as { originalMessage?: string }).originalMessage?.includes("ENOENT")) {
      throw new BackendError(`${command} is not installed`, { command: shown, hint: "run `make setup` (as root) to install the tools kindling needs" });
    }
    const reason = result.timedOut ? `timed out after ${opts.timeoutMs} ms` : `exited with ${result.exitCode ?? result.signal}`;
    const Err = /No space left on device/i.test(stderr) ? NoSpaceError : BackendError;
    throw new Err(`${shown} ${reason}${stderr ? `: ${stderr.trim()}` : ""}`, { command: shown, stderr });
  }
  return { stdout: mask(stdout, secrets), stderr, exitCode: result.exitCode ?? -1 };
}
