import type { DriverModule } from "./contract";
import { fileDriver } from "./file";
import { objectDriver } from "./object";
import { rbdDriver } from "./rbd";

/** Every driver kindling ships, by the `driver` name used in configuration. */
const DRIVERS: Record<string, DriverModule<any>> = {
  file: fileDriver,
  rbd: rbdDriver,
  object: objectDriver,
};

export function driverModule(name: string): DriverModule<any> | undefined {
  return Object.hasOwn(DRIVERS, name) ? DRIVERS[name] : undefined;
}

export function driverNames(): string[] {
  return Object.keys(DRIVERS);
}
