import { homedir, tmpdir } from "node:os";
import { join } from "node:path";

/** `$XDG_DATA_HOME/kindling`: the embedded default backend and records without a home of their own. */
export function dataHome(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_DATA_HOME && env.XDG_DATA_HOME.startsWith("/") ? env.XDG_DATA_HOME : join(homedir(), ".local", "share");
  return join(base, "kindling");
}

/**
 * kindling's home for what lives only while this host runs (FUSE mounts, key files): /run as
 * root, XDG_RUNTIME_DIR for other users (both emptied by a reboot), else a directory of the
 * user's own under the temporary directory.
 */
export function runtimeHome(env: NodeJS.ProcessEnv = process.env): string {
  if (process.getuid?.() === 0) return "/run/kindling";
  return env.XDG_RUNTIME_DIR ? join(env.XDG_RUNTIME_DIR, "kindling") : join(tmpdir(), `kindling-${process.getuid?.() ?? "user"}`);
}
