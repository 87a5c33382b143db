import { readFileSync } from "node:fs";
import type { Socket } from "node:net";
import { TLSSocket, createSecureContext, type SecureContext } from "node:tls";
import { InvalidInputError } from "../util/errors";

/** TLS for STARTTLS: an X.509 certificate and key, or pre-shared keys (TLS-PSK). */
export interface TlsSettings {
  context?: SecureContext;
  /** identity -> key, as in the psk files of nbdkit and libnbd ("identity:hexkey" lines). */
  psk?: Map<string, Buffer>;
}

export function certificateTls(certFile: string, keyFile: string): TlsSettings {
  try {
    return { context: createSecureContext({ cert: readFileSync(certFile), key: readFileSync(keyFile), minVersion: "TLSv1.2" }) };
  } catch (err) {
    throw new InvalidInputError("--tls-cert", `cannot use ${certFile} and ${keyFile}: ${(err as Error).message}`);
  }
}

export function pskTls(file: string): TlsSettings {
  const psk = new Map<string, Buffer>();
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new InvalidInputError("--tls-psk", `cannot read ${file}: ${(err as Error).message}`);
  }
  for (const [i, line] of text.split("\n").entries()) {
    if (!line.trim() || line.startsWith("#")) continue;
    const match = /^([^:]+):([0-9a-fA-F]+)$/.exec(line.trim());
    if (!match) throw new InvalidInputError("--tls-psk", `line ${i + 1} of ${file} is not IDENTITY:HEXKEY`);
    psk.set(match[1], Buffer.from(match[2], "hex"));
  }
  if (!psk.size) throw new InvalidInputError("--tls-psk", `${file} holds no keys`);
  return { psk };
}

/** Turns the plain socket into a TLS server socket and waits for the TLS handshake. */
export function upgrade(socket: Socket, settings: TlsSettings): Promise<TLSSocket> {
  // The plain reader must let go: from now on the bytes on the wire are TLS records.
  socket.removeAllListeners("data");
  const secure = new TLSSocket(socket, {
    isServer: true,
    secureContext: settings.context,
    // Node's TLS-PSK works up to TLS 1.2; GnuTLS clients (libnbd) agree on it.
    ...(settings.psk
      ? { pskCallback: (_s: TLSSocket, identity: string) => settings.psk?.get(identity) ?? null, ciphers: "PSK", maxVersion: "TLSv1.2" as const, minVersion: "TLSv1.2" as const }
      : {}),
  } as ConstructorParameters<typeof TLSSocket>[1]);
  return new Promise((resolve, reject) => {
    secure.once("secure", () => resolve(secure));
    secure.once("error", reject);
    secure.once("close", () => reject(new Error("closed during the TLS handshake")));
  });
}
