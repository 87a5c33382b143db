// VHDX. The virtual size is not in the header: it sits in the metadata region, found through the
// region table at 192 KiB. The probe asks the inspector for those regions as it learns where they
// are, so a streamed image is read once. A VHDX with a parent (a differencing disk) is refused.
import { guidBytes, hasBytes, safeNumber, u16le, u32le, u64le } from "./bytes";
import type { FormatProbe, ImageView, Region } from "./types";

const REGION_TABLE = { offset: 192 * 1024, length: 64 * 1024 };
const METADATA_REGION = guidBytes("8B7CA206-4790-4B9A-B8FE-575F050F886E");
const VIRTUAL_DISK_SIZE = guidBytes("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
const FILE_PARAMETERS = guidBytes("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
const PARENT_LOCATOR = guidBytes("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C");
/** The metadata table (its first 64 KiB) is all this probe reads of the metadata region. */
const METADATA_TABLE_BYTES = 64 * 1024;
const MAX_ENTRIES = 2047;

function isVhdx(view: ImageView): boolean {
  return hasBytes(view.prefix, 0, "vhdxfile");
}

function metadataOffset(view: ImageView): number | undefined {
  const table = view.read(REGION_TABLE.offset, REGION_TABLE.length);
  if (!table || !hasBytes(table, 0, "regi")) return undefined;
  const count = Math.min(u32le(table, 8) ?? 0, MAX_ENTRIES);
  for (let i = 0; i < count; i++) {
    const at = 16 + i * 32;
    if (hasBytes(table, at, METADATA_REGION)) return safeNumber(u64le(table, at + 16));
  }
  return undefined;
}

/** Where the metadata item with this id sits in the image, and whether the table lists it at all. */
function metadataItemOffset(view: ImageView, id: Buffer): { listed: boolean; offset?: number } {
  const base = metadataOffset(view);
  if (base === undefined) return { listed: false };
  const table = view.read(base, METADATA_TABLE_BYTES);
  if (!table || !hasBytes(table, 0, "metadata")) return { listed: false };
  const count = Math.min(u16le(table, 10) ?? 0, MAX_ENTRIES);
  for (let i = 0; i < count; i++) {
    const at = 32 + i * 32;
    if (hasBytes(table, at, id)) return { listed: true, offset: base + (u32le(table, at + 16) ?? 0) };
  }
  return { listed: false };
}

/** The metadata item's bytes, when held. */
function metadataItem(view: ImageView, id: Buffer, length: number): Buffer | undefined {
  const at = metadataItemOffset(view, id).offset;
  return at === undefined ? undefined : view.read(at, length);
}

export const vhdxProbe: FormatProbe = {
  format: "vhdx",
  needs: (view) => {
    if (!isVhdx(view)) return [];
    const out: Region[] = [REGION_TABLE];
    const base = metadataOffset(view);
    if (base !== undefined) out.push({ offset: base, length: METADATA_TABLE_BYTES });
    // The items themselves usually sit after the table (64 KiB into the region in qemu's layout).
    for (const id of [VIRTUAL_DISK_SIZE, FILE_PARAMETERS]) {
      const at = metadataItemOffset(view, id).offset;
      if (at !== undefined) out.push({ offset: at, length: 8 });
    }
    return out;
  },
  matches: isVhdx,
  virtualSize: (view) => safeNumber(u64le(metadataItem(view, VIRTUAL_DISK_SIZE, 8), 0)),
  checks: [
    {
      name: "vhdx.metadata",
      run: (view) => (metadataItem(view, VIRTUAL_DISK_SIZE, 8) ? undefined : "the metadata region (and the virtual size in it) was not found"),
    },
    {
      name: "vhdx.parent",
      run: (view) => {
        const params = metadataItem(view, FILE_PARAMETERS, 8);
        const hasParent = ((u32le(params, 4) ?? 0) & 2) !== 0;
        if (hasParent || metadataItemOffset(view, PARENT_LOCATOR).listed) return "the image is a differencing disk with a parent file";
        return undefined;
      },
    },
  ],
};
