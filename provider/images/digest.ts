import { createHash, type Hash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import { BackendError, InvalidInputError } from "../util/errors";

// What an image's bytes must hash to, and who says so: the user (`--sha256`), Glance
// (`os_hash_value`, `checksum`), an HTTP server (`Content-MD5`). Every digest a source offers is
// checked, in one pass over the bytes as they arrive; a mismatch names the digest that failed.

export type DigestAlgo = "md5" | "sha256" | "sha512";

export interface Digest {
  algo: DigestAlgo;
  /** Lowercase hex. */
  value: string;
  /** Who vouches for it, for messages: "--sha256", "Glance os_hash_value", "Content-MD5". */
  from: string;
}

const HEX_LENGTH: Record<DigestAlgo, number> = { md5: 32, sha256: 64, sha512: 128 };

/** The image's bytes are not the ones promised: the transfer or the source is bad. */
export class IntegrityError extends BackendError {}

/** A digest given as hex (what users and Glance write); the error names `field`. */
export function hexDigest(algo: DigestAlgo, value: string, from: string, field: string): Digest {
  const hex = value.trim().toLowerCase();
  if (!new RegExp(`^[0-9a-f]{${HEX_LENGTH[algo]}}$`).test(hex)) {
    throw new InvalidInputError(field, `a ${algo} digest is ${HEX_LENGTH[algo]} hex digits, not ${JSON.stringify(value.slice(0, 140))}`);
  }
  return { algo, value: hex, from };
}

/** `Content-MD5` is base64 (RFC 1864); undefined when the header is not a 16-byte value. */
export function contentMd5(header: string | undefined): Digest | undefined {
  if (!header) return undefined;
  const raw = Buffer.from(header.trim(), "base64");
  return raw.length === 16 ? { algo: "md5", value: raw.toString("hex"), from: "Content-MD5" } : undefined;
}

/** Whether two lists of digests can both hold of one image: no algorithm with two different values. */
export function conflicting(digests: readonly Digest[]): [Digest, Digest] | undefined {
  for (const a of digests) for (const b of digests) if (a.algo === b.algo && a.value !== b.value) return [a, b];
  return undefined;
}

/**
 * Hashes what passes through it with every algorithm asked for (each once, however many sources
 * vouch for it), and checks them at the end: `verify()` throws IntegrityError naming the first
 * digest that does not match. `bytes` counts what passed.
 */
export class DigestCheck extends Transform {
  private readonly hashes = new Map<DigestAlgo, Hash>();
  private results?: Map<DigestAlgo, string>;
  bytes = 0;

  constructor(
    readonly expect: readonly Digest[],
    /** Algorithms computed even when nobody vouches for them (what the cache and the records keep). */
    also: readonly DigestAlgo[] = ["sha256"],
  ) {
    super();
    for (const algo of [...expect.map((d) => d.algo), ...also]) if (!this.hashes.has(algo)) this.hashes.set(algo, createHash(algo));
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    for (const h of this.hashes.values()) h.update(chunk);
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    this.digests();
    done();
  }

  /** Hex digests of everything that passed, by algorithm (once the stream ended). */
  digests(): Map<DigestAlgo, string> {
    this.results ??= new Map([...this.hashes].map(([algo, h]) => [algo, h.digest("hex")]));
    return this.results;
  }

  /** Throws IntegrityError unless every expected digest matches what passed. */
  verify(what: string): void {
    const got = this.digests();
    for (const d of this.expect) {
      const actual = got.get(d.algo);
      if (actual !== d.value) {
        throw new IntegrityError(`${what}: its ${d.algo} is ${actual}, but ${d.from} says ${d.value} (${this.bytes} bytes read)`, {
          hint: "the bytes were changed in transit or at the source; nothing was kept",
        });
      }
    }
  }
}
