import { isDeepStrictEqual } from "node:util";
import { Backend, type BackendConfig } from "../library/backend";
import { driverModule } from "../drivers/registry";

// One Backend per distinct configuration in the provider process. Pulumi runs every dynamic
// resource of a deployment in one Node process, concurrently up to --parallel, so they share
// these (and their SQLite connections) instead of opening one per call.
const open = new Map<string, Promise<Backend>>();

export function backendFor(config: BackendConfig): Promise<Backend> {
  const key = JSON.stringify(config, Object.keys(flatKeys(config)).sort());
  let backend = open.get(key);
  if (!backend) {
    backend = Backend.open(config);
    backend.catch(() => open.delete(key));
    open.set(key, backend);
  }
  return backend;
}

function flatKeys(value: unknown, into: Record<string, true> = {}): Record<string, true> {
  if (value && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      into[k] = true;
      flatKeys(v, into);
    }
  }
  return into;
}

/** Which storage a backend config points at: name, driver and the driver's identity fields. */
export function backendIdentity(config: Record<string, unknown> | undefined): Record<string, unknown> {
  if (!config) return {};
  const module = typeof config.driver === "string" ? driverModule(config.driver) : undefined;
  const fields = ["name", "driver", ...(module?.identityFields ?? [])];
  return Object.fromEntries(fields.map((f) => [f, config[f]]));
}

export function sameStorage(a: Record<string, unknown> | undefined, b: Record<string, unknown> | undefined): boolean {
  return isDeepStrictEqual(backendIdentity(a), backendIdentity(b));
}
