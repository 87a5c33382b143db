import { hostname, userInfo } from "node:os";
import { InUseError } from "../util/errors";
import type { WriterHolder } from "./export-claims";

/** Who takes a lock by hand: the user and the host, as swiftnbd-ctl's lock named its client. */
export function handHolder(): { user: string; host: string } {
  let user: string;
  try {
    user = userInfo().username;
  } catch {
    // A uid with no passwd entry (a container): the number still says who.
    user = `uid ${process.getuid?.() ?? "unknown"}`;
  }
  return { user, host: hostname() };
}

/**
 * The refusal a volume's writer lock gives to what cannot run beside its holder (a download, a
 * second lock, a delete): names the holder and says what to do instead.
 */
export function heldBy(volume: string, holder: WriterHolder, doing: string): InUseError {
  if (holder.kind === "hand") {
    const refusal = doing === "locked" ? `volume ${volume} is already locked by ${holder.description}` : `volume ${volume} is locked by ${holder.description}; it cannot be ${doing}`;
    return new InUseError(refusal, {
      hint: `\`kindling volume unlock ${volume}\` releases it`
        + (doing === "downloaded" ? `; or snapshot it and download the snapshot (\`kindling volume download ${volume} FILE --snapshot SNAP\`)` : ""),
    });
  }
  if (holder.purpose === "download") {
    return new InUseError(`volume ${volume} is being downloaded by ${holder.description}, which holds its writer lock; it cannot be ${doing}`, { hint: "try again once the download ends" });
  }
  return new InUseError(`volume ${volume} is exported read-write by ${holder.description}, which holds its writer lock; it cannot be ${doing}`, {
    hint: doing === "downloaded"
      ? `snapshot it first (\`kindling snapshot create ${volume} NAME\`) and download the snapshot (\`kindling volume download ${volume} FILE --snapshot NAME\`), or end the export (\`kindling disconnect ${volume}\`)`
      : `end the export first (\`kindling disconnect ${volume}\`)`,
  });
}
