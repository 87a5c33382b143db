import type { ConnectionInfo } from "../persistence/records";
import { InvalidInputError } from "../util/errors";

// The libvirt domain XML for a connection: a <disk> ready for `virsh attach-device`, and for
// rbd the <secret> that holds its user's key (defined with `virsh secret-define`, its value set
// with `virsh secret-set-value UUID --file KEYFILE`, so the key is never on a command line).
// Made from the connection info alone, as a consumer on another host would make it.

function attr(value: unknown): string {
  return String(value).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&apos;");
}

function text(field: string, data: Record<string, unknown>): string {
  const value = data[field];
  if (typeof value !== "string" || !value) throw new InvalidInputError(`connectionInfo.data.${field}`, "is missing");
  return value;
}

/** The guest's device name: vdX for virtio (the default), sdX or hdX for the other buses. */
const TARGET = /^(vd|sd|hd|xvd)[a-z]{1,3}$/;

export interface DiskOptions {
  /** The device name in the guest (vdb by default). */
  target?: string;
  /** A serial the guest shows (/dev/disk/by-id); the volume id by default, as Nova sets it. */
  serial?: string;
}

const LIBVIRT_PROTOCOLS = ["local", "nbd", "rbd"];

/** Refuses, before anything is made, a disk that could not be written: another protocol, a bad target. */
export function checkLibvirtDisk(protocol: string, target: string | undefined): void {
  if (!LIBVIRT_PROTOCOLS.includes(protocol)) throw new InvalidInputError("protocol", `no libvirt disk for a ${protocol} connection (${LIBVIRT_PROTOCOLS.join(", ")} have one)`);
  if (target !== undefined && !TARGET.test(target)) throw new InvalidInputError("target", `must be a guest device name such as vdb or sdb, not ${JSON.stringify(target)}`);
}

/** A <disk> element for the connection. */
export function libvirtDiskXml(info: ConnectionInfo, opts: DiskOptions = {}): string {
  const data = info.data;
  const target = opts.target ?? "vdb";
  checkLibvirtDisk(info.driver_volume_type, target);
  const bus = target.startsWith("vd") ? "virtio" : target.startsWith("xvd") ? "xen" : target.startsWith("hd") ? "ide" : "scsi";
  const readOnly = data.access_mode === "ro";
  const serial = opts.serial ?? (typeof data.volume_id === "string" ? data.volume_id : typeof data.export_name === "string" ? data.export_name : undefined);
  const tail = [
    `  <target dev='${attr(target)}' bus='${bus}'/>`,
    // qemu keeps at most 20 characters of a virtio serial, as Nova's volumes show.
    ...(serial ? [`  <serial>${attr(serial.slice(0, 20))}</serial>`] : []),
    ...(readOnly ? ["  <readonly/>"] : []),
    "</disk>",
  ];
  switch (info.driver_volume_type) {
    case "local":
      return [
        "<disk type='file' device='disk'>",
        "  <driver name='qemu' type='raw' discard='unmap'/>",
        `  <source file='${attr(text("device_path", data))}'/>`,
        ...tail,
      ].join("\n") + "\n";
    case "nbd":
      return [
        "<disk type='network' device='disk'>",
        "  <driver name='qemu' type='raw' discard='unmap'/>",
        // TLS: libvirt's qemu driver takes the credentials from nbd_tls_x509_cert_dir in qemu.conf.
        `  <source protocol='nbd' name='${attr(text("export_name", data))}'${data.tls ? " tls='yes'" : ""}>`,
        `    <host name='${attr(text("host", data))}' port='${attr(data.port)}'/>`,
        "  </source>",
        ...tail,
      ].join("\n") + "\n";
    case "rbd": {
      const hosts = Array.isArray(data.hosts) ? data.hosts : [];
      const ports = Array.isArray(data.ports) ? data.ports : [];
      if (!hosts.length) throw new InvalidInputError("connectionInfo.data.hosts", "names no monitor");
      const auth = data.auth_enabled
        ? [`  <auth username='${attr(text("auth_username", data))}'>`, `    <secret type='ceph' uuid='${attr(text("secret_uuid", data))}'/>`, "  </auth>"]
        : [];
      return [
        "<disk type='network' device='disk'>",
        "  <driver name='qemu' type='raw' cache='writeback' discard='unmap'/>",
        ...auth,
        `  <source protocol='rbd' name='${attr(text("name", data))}'>`,
        ...hosts.map((h, i) => `    <host name='${attr(h)}' port='${attr(ports[i] ?? "6789")}'/>`),
        "  </source>",
        ...tail,
      ].join("\n") + "\n";
    }
    default:
      throw new InvalidInputError("protocol", `no libvirt disk for a ${info.driver_volume_type} connection (local, nbd and rbd have one)`);
  }
}

/**
 * The <secret> an rbd disk's <auth> names: private (libvirt never shows its value back), kept
 * across restarts, used by the Ceph user's name. Undefined for protocols with no secret.
 */
export function libvirtSecretXml(info: ConnectionInfo): string | undefined {
  if (info.driver_volume_type !== "rbd" || !info.data.auth_enabled) return undefined;
  const user = text("auth_username", info.data);
  return [
    "<secret ephemeral='no' private='yes'>",
    `  <uuid>${attr(text("secret_uuid", info.data))}</uuid>`,
    "  <usage type='ceph'>",
    `    <name>client.${attr(user)} secret</name>`,
    "  </usage>",
    "</secret>",
  ].join("\n") + "\n";
}
