import { run } from "../../util/run";

/**
 * The loop devices over `file`, as losetup finds them (by device and inode, so a device set up
 * through another path to the same file counts). None when the file is gone.
 */
export async function loopsOver(file: string): Promise<string[]> {
  const result = await run("losetup", ["--list", "--associated", file, "--noheadings", "--output", "NAME"], { reject: false });
  if (result.exitCode !== 0) return [];
  return result.stdout.split("\n").map((l) => l.trim()).filter((l) => /^\/dev\/loop\d+$/.test(l));
}
