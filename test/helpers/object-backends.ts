import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { S3Store } from "../../provider/drivers/object/s3";
import { SwiftStore } from "../../provider/drivers/object/swift";
import type { ObjectStore } from "../../provider/drivers/object/store";
import { RadosGateway, SwiftAio, objectStoresMissing } from "./objectstores";
import { tempDir } from "./env";

// The object driver's tests run every scenario against both real stores: radosgw through S3 and
// a Swift all-in-one through Swift's API. One of each per test file, started in `before`.

export interface ObjectStores {
  rgw: RadosGateway;
  swift: SwiftAio;
  stop(): void;
}

export async function startObjectStores(): Promise<ObjectStores | undefined> {
  if (objectStoresMissing()) return undefined;
  const [rgw, swift] = await Promise.all([RadosGateway.start(), SwiftAio.start()]);
  return {
    rgw,
    swift,
    stop() {
      rgw.stop();
      swift.stop();
    },
  };
}

export type StoreKind = "s3" | "swift";
export const STORE_KINDS: StoreKind[] = ["s3", "swift"];
export const STORE_LABEL: Record<StoreKind, string> = { s3: "radosgw (S3)", swift: "Swift all-in-one" };

let counter = 0;

/** A backend config on a new bucket or container of its own, with its secret in a 0600 file. */
export async function objectBackendConfig(stores: ObjectStores, kind: StoreKind, extra: Record<string, unknown> = {}): Promise<{ config: Record<string, unknown>; store: ObjectStore; dir: string }> {
  const dir = tempDir("kindling-object-");
  const name = `kindling-t${process.pid}-${++counter}`;
  const secretFile = join(dir, "secret");
  let config: Record<string, unknown>;
  if (kind === "s3") {
    writeFileSync(secretFile, stores.rgw.secretKey, { mode: 0o600 });
    config = { driver: "object", api: "s3", endpoint: stores.rgw.endpoint, bucket: name, accessKey: stores.rgw.accessKey, secretKeyFile: secretFile };
  } else {
    writeFileSync(secretFile, stores.swift.key, { mode: 0o600 });
    config = { driver: "object", api: "swift", authUrl: stores.swift.authUrl, user: stores.swift.user, keyFile: secretFile, container: name };
  }
  config = { ...config, cacheDir: join(dir, "cache"), ...extra };
  const store = storeFor(stores, kind, name);
  await store.createContainer();
  return { config, store, dir };
}

/** The store as an admin would look at it: the same bucket or container, kindling's driver not involved. */
export function storeFor(stores: ObjectStores, kind: StoreKind, name: string): ObjectStore {
  return kind === "s3"
    ? new S3Store({ endpoint: stores.rgw.endpoint, bucket: name, region: "us-east-1", accessKey: stores.rgw.accessKey, secretKey: stores.rgw.secretKey, timeoutMs: 30_000 })
    : new SwiftStore({ authUrl: stores.swift.authUrl, user: stores.swift.user, key: stores.swift.key, container: name, timeoutMs: 30_000 });
}

/** Every key under a prefix. */
export async function keysUnder(store: ObjectStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of store.list(prefix)) out.push(o.key);
  return out;
}

export const volumeKeys = (store: ObjectStore, volumeId: string) => keysUnder(store, `kindling/v1/vol/${volumeId}/`);
