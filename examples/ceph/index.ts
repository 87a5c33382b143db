// kindling's Ceph example: on an RBD pool, a volume, a snapshot of it, a copy-on-write clone,
// a larger volume restored from the snapshot, and an `rbd` attachment that hands a librbd
// consumer (qemu, libvirt) the connection info. The cluster and its credentials come from the
// stack's config, the key as a secret, so nothing about the cluster is written in the program.
import * as pulumi from "@pulumi/pulumi";
import * as kindling from "kindling";

const config = new pulumi.Config();

// Settings not given are left out, so the rbd driver's defaults (user "admin"...) apply and
// its checks name what is missing (cephConf or monHost, keyring or key).
const given = (settings: Record<string, pulumi.Input<unknown> | undefined>) =>
  Object.fromEntries(Object.entries(settings).filter(([, v]) => v !== undefined)) as Record<string, pulumi.Input<unknown>>;

const backend: kindling.BackendArgs = {
  // The records of a Ceph backend live in this host's data home under this name, shared
  // with the kindling command when its config names the same backend.
  name: config.get("backendName") ?? "ceph",
  driver: "rbd",
  pool: config.get("pool") ?? "volumes",
  ...given({
    monHost: config.get("monHost"),
    cephConf: config.get("cephConf"),
    user: config.get("user"),
    keyring: config.get("keyring"),
    // `pulumi config set --secret key`: encrypted in the stack's config and in state.
    key: config.getSecret("key"),
  }),
};

// e.g. `pulumi config set --path extraSpecs.features layering,exclusive-lock,object-map,fast-diff`
const extraSpecs = config.getObject<Record<string, string>>("extraSpecs");

const data = new kindling.Volume("data", {
  backend,
  // Raising it extends the image in place (rbd resize); lowering it is refused.
  sizeGiB: config.getNumber("sizeGiB") ?? 1,
  extraSpecs,
  metadata: { example: "ceph" },
});

const beforeUpgrade = new kindling.Snapshot("before-upgrade", { backend, volumeId: data.volumeId });

// A copy-on-write clone of the volume: it grows with it.
const copy = new kindling.Volume("data-copy", { backend, sizeGiB: data.sizeGiB, sourceVolumeId: data.volumeId });

// A clone of the snapshot, grown past the snapshot's size.
const restored = new kindling.Volume("restored", { backend, sizeGiB: 2, snapshotId: beforeUpgrade.snapshotId });

const consumer = new kindling.Attachment("data-librbd", {
  backend,
  volumeId: data.volumeId,
  protocol: "rbd",
  // true: also map the image on this host (kernel rbd or rbd-fuse + loop; needs root).
  attachLocally: config.getBoolean("attachLocally") ?? false,
});

interface RbdConnectionData {
  name: string;
  monitors: string[];
  auth_username: string;
}

// connectionInfo is a secret output (it holds the key); where the image is, is not.
const where = consumer.connectionInfo.apply((info) => (info as { data: RbdConnectionData }).data);

export const volume = { id: data.volumeId, name: data.name, sizeGiB: data.sizeGiB, location: data.location };
export const snapshot = { id: beforeUpgrade.snapshotId, volumeSizeGiB: beforeUpgrade.volumeSizeGiB };
export const clone = { id: copy.volumeId, name: copy.name, sizeGiB: copy.sizeGiB, location: copy.location };
export const fromSnapshot = { id: restored.volumeId, name: restored.name, sizeGiB: restored.sizeGiB, location: restored.location };
export const attachment = {
  id: consumer.connectionId,
  monitors: pulumi.unsecret(where.apply((d) => d.monitors)),
  image: pulumi.unsecret(where.apply((d) => d.name)),
  user: pulumi.unsecret(where.apply((d) => d.auth_username)),
  devicePath: consumer.devicePath,
};
