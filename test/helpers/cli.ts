import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { resolve } from "node:path";

export const KINDLING = resolve(__dirname, "..", "..", "..", "bin", "kindling");

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  json<T = any>(): T;
}

/** Runs bin/kindling as a user would, with its own environment and working directory. */
export function kindling(args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): CliResult {
  const result = spawnSync(KINDLING, args, {
    cwd: opts.cwd,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", ...opts.env },
    encoding: "utf8",
  });
  return {
    code: result.status ?? -1,
    stdout: result.stdout,
    stderr: result.stderr,
    json: () => JSON.parse(result.stdout),
  };
}

/** A command that must succeed: its result, or a failed assertion with its exit code and stderr. */
export function ok(r: CliResult): CliResult {
  if (r.code !== 0) throw new assert.AssertionError({ message: `exit ${r.code}: ${r.stderr}`, actual: r.code, expected: 0, operator: "===" });
  return r;
}

/** `kindling --config CONFIG --json ...` that must succeed, as its parsed output. */
export function cliFor(config: string): (...args: string[]) => any {
  return (...args) => ok(kindling(["--config", config, "--json", ...args])).json();
}

/**
 * As `kindling`, without blocking this process while the command runs: for tests whose
 * servers (an http server for image sources) live in this process and must answer it.
 */
export function kindlingAsync(args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): Promise<CliResult> {
  return new Promise((resolveResult) => {
    const child = spawn(KINDLING, args, { cwd: opts.cwd, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", ...opts.env } });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("close", (code) => resolveResult({ code: code ?? -1, stdout, stderr, json: () => JSON.parse(stdout) }));
  });
}
