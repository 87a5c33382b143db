// `qemu-img info`, run so that a hostile image cannot steer it (checklist item 5 of the image
// notes): the format is always given (-f), so qemu never probes; the path is absolute, so no
// "json:" or protocol prefix can be read into it; -U, so a lock held by a writer does not matter
// and nothing is written; and under prlimit, because a crafted header can make qemu-img burn CPU
// and memory (CVE-2015-5162). Its answer is then compared with the inspector's, field by field:
// two independent parsers agreeing is the point, so any difference is a refusal.
import { dirname, isAbsolute, resolve } from "node:path";
import { BackendError } from "../../util/errors";
import { run, type RunOptions, type RunResult } from "../../util/run";
import { DEFAULT_VMDK_TYPES } from "./vmdk";
import type { CheckFailure, Inspection } from "./types";

/** Address space and CPU time qemu-img info may use (Cinder uses 1 GiB; 30 s of CPU is ample for a header). */
export const QEMU_INFO_LIMITS = { addressSpaceBytes: 1 << 30, cpuSeconds: 30 };
const WALL_TIMEOUT_MS = 120_000;

/** The fields of `qemu-img info --output=json` the cross-check reads. */
export interface QemuImgInfo {
  format: string;
  "virtual-size": number;
  filename: string;
  "backing-filename"?: string;
  "full-backing-filename"?: string;
  "backing-filename-format"?: string;
  encrypted?: boolean;
  "format-specific"?: { type: string; data?: Record<string, unknown> & { "data-file"?: string; "create-type"?: string; extents?: { filename?: string }[] } };
  [key: string]: unknown;
}

/** How external commands are run: the project's run helper, or a wrapper of it that records calls. */
export type Runner = (command: string, args: readonly string[], opts?: RunOptions) => Promise<RunResult>;

export interface QemuInfoOptions {
  runner?: Runner;
  limits?: { addressSpaceBytes: number; cpuSeconds: number };
}

/** The argument vector: prlimit around qemu-img, every value its own argument, never a shell. */
export function qemuInfoArgs(path: string, format: string, limits = QEMU_INFO_LIMITS): string[] {
  return [`--as=${limits.addressSpaceBytes}`, `--cpu=${limits.cpuSeconds}`, "--", "qemu-img", "info", "-f", format, "--output=json", "-U", path];
}

export async function qemuImgInfo(path: string, format: string, opts: QemuInfoOptions = {}): Promise<QemuImgInfo> {
  if (!isAbsolute(path)) throw new BackendError(`qemu-img info needs an absolute path, not ${JSON.stringify(path)}`);
  if (!/^[a-z0-9]+$/.test(format)) throw new BackendError(`${JSON.stringify(format)} is not a qemu format name`);
  const runner = opts.runner ?? run;
  const result = await runner("prlimit", qemuInfoArgs(path, format, opts.limits), { timeoutMs: WALL_TIMEOUT_MS, env: { LC_ALL: "C" } });
  let parsed: unknown;
  try {
    parsed = JSON.parse(result.stdout);
  } catch (err) {
    throw new BackendError(`qemu-img info of ${path} did not print JSON`, { cause: err, stderr: result.stderr });
  }
  if (typeof parsed !== "object" || parsed === null || typeof (parsed as QemuImgInfo).format !== "string" || typeof (parsed as QemuImgInfo)["virtual-size"] !== "number") {
    throw new BackendError(`qemu-img info of ${path} printed JSON without a format and virtual size`);
  }
  return parsed as QemuImgInfo;
}

/**
 * Every way qemu-img's view of the image differs from the inspector's, or names another file.
 * `path` is the absolute path qemu-img was given; vmdk extents must all be that very file.
 */
export function crossCheckQemuInfo(info: QemuImgInfo, inspection: Inspection, path: string, vmdkTypes: readonly string[] = DEFAULT_VMDK_TYPES): CheckFailure[] {
  const out: CheckFailure[] = [];
  if (info.format !== inspection.qemuFormat) out.push({ check: "qemu_info.format", reason: `qemu-img reads the image as ${info.format}, the inspector as ${inspection.qemuFormat ?? inspection.format}` });
  if (info["virtual-size"] !== inspection.virtualSize) out.push({ check: "qemu_info.virtual_size", reason: `qemu-img says the virtual size is ${info["virtual-size"]}, the inspector ${inspection.virtualSize}` });
  const backing = info["full-backing-filename"] ?? info["backing-filename"];
  if (backing !== undefined || info["backing-filename-format"] !== undefined) out.push({ check: "qemu_info.backing_file", reason: `qemu-img reports a backing file ${JSON.stringify(backing ?? null)}` });
  if (info.encrypted) out.push({ check: "qemu_info.encrypted", reason: "qemu-img reports the image as encrypted" });
  const data = info["format-specific"]?.data;
  if (data && data["data-file"] !== undefined) out.push({ check: "qemu_info.data_file", reason: `qemu-img reports an external data file ${JSON.stringify(data["data-file"])}` });
  if (info.format === "vmdk") {
    const type = data?.["create-type"];
    if (typeof type !== "string" || !vmdkTypes.includes(type)) out.push({ check: "qemu_info.vmdk_create_type", reason: `qemu-img reports createType ${JSON.stringify(type ?? null)}` });
    const extents = Array.isArray(data?.extents) ? data.extents : [];
    const elsewhere = extents.filter((e) => typeof e?.filename !== "string" || resolve(dirname(path), e.filename) !== path);
    if (extents.length === 0 || elsewhere.length) out.push({ check: "qemu_info.vmdk_extents", reason: extents.length === 0 ? "qemu-img reports no extents" : `qemu-img reports extents in other files: ${JSON.stringify(elsewhere.map((e) => e?.filename ?? null))}` });
  }
  return out;
}
