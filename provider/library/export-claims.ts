// Placeholder until the NBD server's claims land: no server claims anything.
import type { Persistence } from "../persistence/contract";
import type { ProcessIdentity } from "../util/owner";

export interface ExportClaim {
  owner: ProcessIdentity;
  heartbeat: number;
  connectionId: string;
  volumeId: string;
  snapshotId?: string;
  mode: "rw" | "ro";
}

export async function liveClaims(_persistence: Persistence, _filter: { volumeId?: string; snapshotId?: string }): Promise<ExportClaim[]> {
  return [];
}

export async function waitForClaimRelease(_persistence: Persistence, _connectionId: string, _timeoutMs: number): Promise<boolean> {
  return true;
}
