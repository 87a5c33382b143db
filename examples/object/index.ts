// kindling's object-store example: in one S3 bucket (radosgw, or any store with S3's
// conditional creates), a volume, a snapshot of it, a clone and a larger volume restored from
// the snapshot. Each volume is a log of immutable objects under `kindling/v1/vol/<id>/`; a
// snapshot or a clone is one small record, whatever the volume's size. Where the bucket is and
// its credentials come from the stack's config, the secret key as a secret, so nothing about
// the store is written in the program.
import { homedir } from "node:os";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import * as kindling from "kindling";

const config = new pulumi.Config();

// Settings not given are left out, so the object driver's defaults apply and its checks name
// what is missing (exactly one of secretKey or secretKeyFile).
const given = (settings: Record<string, pulumi.Input<unknown> | undefined>) =>
  Object.fromEntries(Object.entries(settings).filter(([, v]) => v !== undefined)) as Record<string, pulumi.Input<unknown>>;

// The records of an object backend live in this host's data home under this name, shared with
// the kindling command when its config names the same backend.
const backendName = config.get("backendName") ?? "objects";

// What only this host keeps of these volumes; the store holds everything else. Under the XDG
// cache home by default, one directory per backend.
const cacheHome = process.env.XDG_CACHE_HOME?.startsWith("/") ? process.env.XDG_CACHE_HOME : join(homedir(), ".cache");

const backend: kindling.BackendArgs = {
  name: backendName,
  driver: "object",
  api: "s3",
  endpoint: config.require("endpoint"),
  bucket: config.get("bucket") ?? "kindling-volumes",
  accessKey: config.require("accessKey"),
  cacheDir: config.get("cacheDir") ?? join(cacheHome, "kindling", "object", backendName),
  ...given({
    region: config.get("region"),
    // `pulumi config set --secret secretKey`: encrypted in the stack's config and in state.
    secretKey: config.getSecret("secretKey"),
    // ...or a file on this host that holds it: the key then stays out of the stack altogether.
    secretKeyFile: config.get("secretKeyFile"),
  }),
};

const data = new kindling.Volume("data", {
  backend,
  // Raising it appends a resize record to the volume's log: in place, the data kept. Lowering
  // it is refused.
  sizeGiB: config.getNumber("sizeGiB") ?? 1,
  metadata: { example: "object" },
});

// One record in the volume's log pins its state; `snap/<id>` names it.
const beforeUpgrade = new kindling.Snapshot("before-upgrade", { backend, volumeId: data.volumeId });

// A clone reads through to the volume as it was when cloned, until written; it grows with it.
const copy = new kindling.Volume("data-copy", { backend, sizeGiB: data.sizeGiB, sourceVolumeId: data.volumeId });

// A clone of the snapshot, grown past the snapshot's size.
const restored = new kindling.Volume("restored", { backend, sizeGiB: 2, snapshotId: beforeUpgrade.snapshotId });

export const volume = { id: data.volumeId, name: data.name, sizeGiB: data.sizeGiB, location: data.location };
export const snapshot = { id: beforeUpgrade.snapshotId, volumeId: beforeUpgrade.volumeId, volumeSizeGiB: beforeUpgrade.volumeSizeGiB };
export const clone = { id: copy.volumeId, name: copy.name, sizeGiB: copy.sizeGiB, location: copy.location };
export const fromSnapshot = { id: restored.volumeId, name: restored.name, sizeGiB: restored.sizeGiB, location: restored.location };
