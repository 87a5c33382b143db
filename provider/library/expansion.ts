import { hostname } from "node:os";
import type { Connection } from "./connection";

/**
 * What an extend means for each consumer of the volume: kindling resizes what it attached on
 * this host itself, but a hypervisor holding the volume keeps the old size until it is told,
 * and over NBD until it reconnects (qemu: "Cannot grow NBD nodes"). Cinder leaves this to Nova
 * (a volume-extended event, then block_resize); here it is said, per connection, in the
 * result of the extend.
 */
export interface ConnectionExpansion {
  connectionId: string;
  protocol: string;
  /** A device kindling attached on this host: it shows the new size already. */
  device?: string;
  /** What a hypervisor (qemu, libvirt) using this connection must do for its guest to see the new size. */
  consumerAction: "block_resize" | "reconnect";
  /** The same, in words, with the commands. */
  detail: string;
}

export interface ExpansionReport {
  sizeGiB: number;
  sizeBytes: number;
  /**
   * As CSI's ControllerExpandVolume says it: true while the volume has a connection, whose
   * consumer has something left to do (see `connections`), if only growing the filesystem
   * inside with its own tool (resize2fs, xfs_growfs). False: the next consumer sees the new size.
   */
  node_expansion_required: boolean;
  connections: ConnectionExpansion[];
}

function detailFor(protocol: string, sizeBytes: number): { consumerAction: ConnectionExpansion["consumerAction"]; detail: string } {
  if (protocol === "nbd") {
    return {
      consumerAction: "reconnect",
      detail: "an NBD client keeps the size the export had when it connected (qemu cannot grow NBD nodes): detach the disk and attach it again (virsh detach-device, then attach-device), or reconnect the client; kindling's server gives the new size to every new connection",
    };
  }
  return {
    consumerAction: "block_resize",
    detail: `a running guest sees the new size once its hypervisor resizes the disk: QMP block_resize to ${sizeBytes} bytes, or virsh blockresize DOMAIN TARGET ${sizeBytes}B`,
  };
}

/** The report for a volume now `sizeGiB` big, over its connections (after the extend). */
export function expansionReport(sizeGiB: number, connections: Connection[]): ExpansionReport {
  const sizeBytes = sizeGiB * 1024 ** 3;
  const here = hostname();
  const rows = connections.map((c): ConnectionExpansion => {
    const resizedHere = c.devicePath !== undefined && (c.attachedHost ?? here) === here && c.protocol !== "nbd";
    if (resizedHere) {
      return { connectionId: c.id, protocol: c.protocol, device: c.devicePath, consumerAction: "block_resize", detail: `${c.devicePath} on ${here} shows the new size already; a guest given that device still needs its hypervisor's block_resize` };
    }
    const device = c.devicePath !== undefined && c.protocol === "nbd" ? { device: c.devicePath } : {};
    const what = detailFor(c.protocol, sizeBytes);
    return { connectionId: c.id, protocol: c.protocol, ...device, ...what, ...(device.device ? { detail: `${device.device} keeps the old size until detached and attached again (kindling detach, kindling attach); ${what.detail}` } : {}) };
  });
  return { sizeGiB, sizeBytes, node_expansion_required: rows.length > 0, connections: rows };
}
