export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

export function gibToBytes(gib: number): number {
  return gib * GiB;
}

/** Capacity figures in Cinder's stats are GiB with two decimals. */
export function bytesToGiB(bytes: number): number {
  return Math.round((bytes / GiB) * 100) / 100;
}

export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}
