// The whole pre-conversion check of a staged image file, in the order the image notes require:
// the inspector and the policy first (no external program sees a byte of an image they refuse),
// then qemu-img info under limits, cross-checked. Only an image passing both may be converted.
import { resolve } from "node:path";
import { UnsafeImageError } from "./errors";
import { inspectFile } from "./file";
import type { InspectorOptions } from "./inspector";
import { enforcePolicy, type ImagePolicy } from "./policy";
import { crossCheckQemuInfo, qemuImgInfo, type QemuImgInfo, type QemuInfoOptions } from "./qemu-info";
import type { Inspection } from "./types";
import { DEFAULT_VMDK_TYPES } from "./vmdk";

export interface ImageCheckOptions extends ImagePolicy, QemuInfoOptions {
  vmdkTypes?: readonly string[];
  prefixBytes?: number;
}

export interface CheckedImage {
  path: string;
  inspection: Inspection;
  qemuInfo: QemuImgInfo;
  /** The `-f` value every later qemu-img command on this file must be given. */
  qemuFormat: string;
  virtualSize: number;
}

export async function checkImageFile(path: string, opts: ImageCheckOptions = {}): Promise<CheckedImage> {
  const abs = resolve(path);
  const vmdkTypes = opts.vmdkTypes ?? DEFAULT_VMDK_TYPES;
  const inspectorOpts: InspectorOptions = { vmdkTypes, prefixBytes: opts.prefixBytes };
  const inspection = enforcePolicy(await inspectFile(abs, inspectorOpts), opts);
  const qemuFormat = inspection.qemuFormat;
  // enforcePolicy admits only formats qemu has a name for; this guards the invariant, not input.
  if (qemuFormat === undefined || inspection.virtualSize === undefined) throw new UnsafeImageError([{ check: "banned_format", reason: `format ${inspection.format} is not one qemu-img may read` }]);
  const qemuInfo = await qemuImgInfo(abs, qemuFormat, opts);
  const failures = crossCheckQemuInfo(qemuInfo, inspection, abs, vmdkTypes);
  if (failures.length) throw new UnsafeImageError(failures, { what: "image (qemu-img info cross-check)" });
  return { path: abs, inspection, qemuInfo, qemuFormat, virtualSize: inspection.virtualSize };
}
