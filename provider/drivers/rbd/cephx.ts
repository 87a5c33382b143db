import { createHash, createHmac } from "node:crypto";

// The credentials an rbd connection hands its consumer. With the backend's key known, each
// connection gets a cephx user of its own, `client.kindling-attachment-<connection id>`, whose
// key is derived from the backend's key and the user's name (HMAC-SHA256): nothing is stored,
// any process of the backend can give it again, and ending the connection removes the user,
// which revokes that consumer alone.

const ATTACHMENT_USER_PREFIX = "kindling-attachment-";

/** The cephx user (without "client.") made for one connection. */
export function attachmentUser(connectionId: string): string {
  return `${ATTACHMENT_USER_PREFIX}${connectionId}`;
}

export function isAttachmentUser(user: string): boolean {
  return user.startsWith(ATTACHMENT_USER_PREFIX);
}

/**
 * A cephx key for `user`, derived from the backend's key. A cephx key is the base64 of
 * CryptoKey's encoding: u16 type (1, AES), utime created (u32 sec, u32 nsec), u16 length, secret.
 */
export function derivedKey(backendKey: string, user: string): string {
  const secret = createHmac("sha256", Buffer.from(backendKey, "base64")).update(`kindling attachment key\0${user}`).digest().subarray(0, 16);
  const encoded = Buffer.alloc(12 + secret.length);
  encoded.writeUInt16LE(1, 0);
  encoded.writeUInt32LE(0, 2);
  encoded.writeUInt32LE(0, 6);
  encoded.writeUInt16LE(secret.length, 10);
  secret.copy(encoded, 12);
  return encoded.toString("base64");
}

/** A keyring as os-brick reads it from `keyring` in connection info (and ceph tools from a file). */
export function keyringText(user: string, key: string, caps?: Record<string, string>): string {
  const lines = [`[client.${user}]`, `\tkey = ${key}`];
  for (const [service, cap] of Object.entries(caps ?? {})) lines.push(`\tcaps ${service} = "${cap}"`);
  return `${lines.join("\n")}\n`;
}

/**
 * The UUID of the libvirt secret that holds `user`'s key: the same for the same cluster and
 * user every time it is asked, so the secret is defined once per user and the XML made again
 * later still names it.
 */
export function secretUuid(fsid: string, user: string): string {
  const h = createHash("sha256").update(`kindling libvirt secret\0${fsid}\0${user}`).digest();
  h[6] = (h[6] & 0x0f) | 0x80; // version 8: made by its own rule
  h[8] = (h[8] & 0x3f) | 0x80; // RFC 4122 variant
  const x = h.subarray(0, 16).toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

/**
 * Caps for a connection's user: rbd on the volume's pool, read-only on the pools of its clone
 * parents (a clone reads their data), and the monitor's rbd profile (which lets it see the
 * map and blocklist a dead client of the same image, as librbd's exclusive lock needs).
 */
export function attachmentCaps(pool: string, parentPools: string[]): Record<string, string> {
  const osd = [`profile rbd pool=${pool}`, ...[...new Set(parentPools)].filter((p) => p !== pool).map((p) => `profile rbd-read-only pool=${p}`)];
  return { mon: "profile rbd", osd: osd.join(", ") };
}
