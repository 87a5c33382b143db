import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { sh } from "./env";

/**
 * A directory (under `dir`) holding a `losetup` that makes the device and then takes its time
 * to say so: put first on PATH, it holds an attach between making the device and recording it,
 * where a kill -9 can land.
 */
export function slowLosetup(dir: string): string {
  const bin = join(dir, "slowbin");
  mkdirSync(bin, { recursive: true });
  const real = sh("sh", ["-c", "command -v losetup"]).trim();
  writeFileSync(join(bin, "losetup"), `#!/bin/sh
out=$("${real}" "$@"); rc=$?
case " $* " in *" --find "*) sleep 3 ;; esac
[ -n "$out" ] && printf '%s\\n' "$out"
exit $rc
`);
  chmodSync(join(bin, "losetup"), 0o755);
  return bin;
}
