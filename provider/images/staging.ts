import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InvalidInputError, NoSpaceError } from "../util/errors";

// The private directory an image is staged in while it is made or checked: mkdtemp makes it
// readable by its owner only (the staged bytes are a volume's data, or not yet judged), under
// the caller's staging root or the system's temp dir (TMPDIR). The caller removes it.

export async function makeStagingDir(root: string | undefined): Promise<string> {
  const parent = root ?? tmpdir();
  try {
    return await mkdtemp(join(parent, "kindling-image-"));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    if (code === "ENOSPC") throw new NoSpaceError(`no space to stage an image in ${parent}`, { cause: err });
    throw new InvalidInputError("stagingDir", `cannot make a staging directory in ${parent} (${code})`, { hint: "give a writable directory (stagingDir in the library; TMPDIR for the command)" });
  }
}
