// kindling's basic example: on the embedded default backend (the same `local` file backend the
// kindling command uses), a volume, a snapshot of it, a clone, a larger volume restored from
// the snapshot, and a local attachment that gives this host a block device.
import * as pulumi from "@pulumi/pulumi";
import * as kindling from "kindling";

const config = new pulumi.Config();
const backend = kindling.defaultBackend();

const data = new kindling.Volume("data", {
  backend,
  sizeGiB: config.getNumber("sizeGiB") ?? 1,
  metadata: { example: "basic" },
});

const beforeUpgrade = new kindling.Snapshot("before-upgrade", { backend, volumeId: data.volumeId });

const copy = new kindling.Volume("data-copy", { backend, sizeGiB: data.sizeGiB, sourceVolumeId: data.volumeId });

const restored = new kindling.Volume("restored", { backend, sizeGiB: 2, snapshotId: beforeUpgrade.snapshotId });

const here = new kindling.Attachment("data-here", {
  backend,
  volumeId: data.volumeId,
  protocol: "local",
  attachLocally: config.getBoolean("attachLocally") ?? true,
});

export const volume = { id: data.volumeId, name: data.name, sizeGiB: data.sizeGiB, location: data.location };
export const snapshot = { id: beforeUpgrade.snapshotId, volumeSizeGiB: beforeUpgrade.volumeSizeGiB };
export const clone = { id: copy.volumeId, name: copy.name, sizeGiB: copy.sizeGiB };
export const fromSnapshot = { id: restored.volumeId, name: restored.name, sizeGiB: restored.sizeGiB };
export const devicePath = here.devicePath;
