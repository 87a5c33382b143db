// GPT and MBR disks are raw images; they are detected so the partition table can be sanity
// checked (as oslo does) and so a table wrapped around another format is caught as a polyglot.
import { hasBytes, u32le, u8 } from "./bytes";
import type { FormatProbe, ImageView } from "./types";

const SIGNATURE_AT = 510;
const ENTRIES_AT = 446;
const PROTECTIVE = 0xee;

function hasMbrSignature(view: ImageView): boolean {
  return u8(view.prefix, SIGNATURE_AT) === 0x55 && u8(view.prefix, SIGNATURE_AT + 1) === 0xaa;
}

/** A FAT boot sector also ends in 55 AA; a bare filesystem is raw, not a partitioned disk. */
function isFatBootSector(view: ImageView): boolean {
  return hasBytes(view.prefix, 54, "FAT") || hasBytes(view.prefix, 82, "FAT32");
}

function isGpt(view: ImageView): boolean {
  return hasMbrSignature(view) && (hasBytes(view.prefix, 512, "EFI PART") || hasBytes(view.prefix, 4096, "EFI PART"));
}

interface Entry {
  boot: number;
  type: number;
  startChs: [number, number, number];
  lba: number;
  sectors: number;
}

function entries(view: ImageView): Entry[] {
  const out: Entry[] = [];
  for (let i = 0; i < 4; i++) {
    const at = ENTRIES_AT + i * 16;
    out.push({
      boot: u8(view.prefix, at) ?? 0,
      startChs: [u8(view.prefix, at + 1) ?? 0, u8(view.prefix, at + 2) ?? 0, u8(view.prefix, at + 3) ?? 0],
      type: u8(view.prefix, at + 4) ?? 0,
      lba: u32le(view.prefix, at + 8) ?? 0,
      sectors: u32le(view.prefix, at + 12) ?? 0,
    });
  }
  return out;
}

function mbrCheck(view: ImageView): string | undefined {
  const list = entries(view);
  const bad = list.findIndex((e) => e.boot !== 0 && e.boot !== 0x80);
  if (bad >= 0) return `partition entry ${bad + 1} has boot flag 0x${list[bad].boot.toString(16)} (only 0 or 0x80 are valid)`;
  const used = list.filter((e) => e.type !== 0);
  if (used.length === 0) return "the partition table has no partitions";
  if (isGpt(view)) {
    const protective = used.filter((e) => e.type === PROTECTIVE);
    if (protective.length !== 1 || used.length !== 1) return "a GPT's protective MBR must hold exactly one partition, of type 0xEE";
    const p = protective[0];
    // start CHS 0/2/0 (head 0, sector 2, cylinder 0) and LBA 1: the GPT header right after the MBR
    if (p.lba !== 1 || p.startChs[0] !== 0 || (p.startChs[1] & 0x3f) !== 2 || p.startChs[2] !== 0) return "the protective MBR does not start at LBA 1 and CHS 0/2/0";
  }
  return undefined;
}

export const gptProbe: FormatProbe = {
  format: "gpt",
  matches: (view) => isGpt(view) && !isFatBootSector(view),
  virtualSize: (view) => view.totalSize,
  checks: [{ name: "gpt.mbr", run: mbrCheck }],
};

export const mbrProbe: FormatProbe = {
  format: "mbr",
  matches: (view) => hasMbrSignature(view) && !isGpt(view) && !isFatBootSector(view),
  virtualSize: (view) => view.totalSize,
  checks: [{ name: "mbr.partitions", run: mbrCheck }],
};
