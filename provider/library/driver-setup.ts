import type { VolumeDriver } from "../drivers/contract";

/** The driver calls that need the driver set up (they reach the storage). */
const NEEDS_SETUP = new Set<string>([
  "stats", "applyQos", "maxSizeGiB", "createVolume", "deleteVolume", "extendVolume", "cloneVolume",
  "createSnapshot", "deleteSnapshot", "createVolumeFromSnapshot", "inspect", "inspectSnapshot",
  "initializeConnection", "terminateConnection", "open", "lockVolume", "unlockVolume",
]);

/**
 * The driver, set up on the first call that needs it and once only: `volume list` reads records
 * and must not wait out a storage cluster that does not answer (an rbd setup lists images).
 * `setup()` itself may be called to start it early; a failed setup is tried again next time.
 */
export function setupOnFirstUse(driver: VolumeDriver): VolumeDriver {
  let started: Promise<void> | undefined;
  const setup = (): Promise<void> => {
    started ??= driver.setup().catch((err) => {
      started = undefined;
      throw err;
    });
    return started;
  };
  return new Proxy(driver, {
    get(target, property, receiver) {
      if (property === "setup") return setup;
      const value = Reflect.get(target, property, receiver);
      if (typeof property !== "string" || !NEEDS_SETUP.has(property) || typeof value !== "function") return value;
      return async (...args: unknown[]) => {
        await setup();
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}
