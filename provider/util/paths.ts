import { homedir } from "node:os";
import { join } from "node:path";

/** `$XDG_DATA_HOME/kindling`: the embedded default backend and records without a home of their own. */
export function dataHome(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_DATA_HOME && env.XDG_DATA_HOME.startsWith("/") ? env.XDG_DATA_HOME : join(homedir(), ".local", "share");
  return join(base, "kindling");
}
