// What kindling accepts, applied to what the inspector found (checklist items 2-4 of the image
// notes): exactly one format, not compressed (the caller decompresses and inspects again), on the
// allowlist, the one declared, and every safety check of it passed. Nothing here reads bytes.
import { UnsafeImageError } from "./errors";
import { isPolyglot } from "./inspector";
import { COMPRESSIONS, type CheckFailure, type DetectedFormat, type Inspection } from "./types";

/** The default allowlist: raw (plain, partitioned or iso), qcow2, vmdk, vhd, vhdx, vdi. qed, qcow v1 and luks are banned. */
export const DEFAULT_ALLOWED_FORMATS: readonly DetectedFormat[] = ["raw", "iso", "gpt", "mbr", "qcow2", "vmdk", "vhd", "vhdx", "vdi"];

// A declared format (Glance's disk_format, or qemu's name for it) and what detection may find for
// it. A raw declaration covers anything qemu reads as raw; nothing else covers raw, so a
// "qcow2" that is really raw is as much a mismatch as a "raw" that is really qcow2 (CVE-2024-40767).
const DECLARED: Record<string, readonly DetectedFormat[]> = {
  raw: ["raw", "gpt", "mbr", "iso"],
  iso: ["iso"],
  qcow2: ["qcow2"],
  vmdk: ["vmdk"],
  vhd: ["vhd"],
  vpc: ["vhd"],
  vhdx: ["vhdx"],
  vdi: ["vdi"],
  qed: ["qed"],
  luks: ["luks"],
};

export interface ImagePolicy {
  /** The format the source claims (Glance disk_format or a qemu name); undefined when none is claimed. */
  declaredFormat?: string;
  allowedFormats?: readonly DetectedFormat[];
  /** A virtual size beyond this is refused (a size bomb). */
  maxVirtualSizeBytes?: number;
}

/** The failed checks of an inspection under a policy, in the order they are reported. */
export function policyFailures(inspection: Inspection, policy: ImagePolicy = {}): CheckFailure[] {
  const allowed = policy.allowedFormats ?? DEFAULT_ALLOWED_FORMATS;
  const out: CheckFailure[] = [];
  const fmt = inspection.format;
  if (inspection.missed.length) {
    out.push({ check: "incomplete", reason: `the inspector did not see bytes it needed (at ${inspection.missed.map((r) => r.offset).join(", ")})` });
  }
  if (isPolyglot(inspection.matches)) {
    out.push({ check: "polyglot", reason: `the content is valid as more than one format (${inspection.matches.join(", ")}), so what it is depends on who reads it` });
  }
  if (COMPRESSIONS.includes(fmt)) {
    out.push({ check: "compressed", reason: `the content is ${fmt}-compressed; it must be decompressed and the inner image inspected` });
  } else if (!allowed.includes(fmt)) {
    out.push({ check: "banned_format", reason: `format ${fmt} is not allowed (allowed: ${allowed.join(", ")})` });
  }
  if (policy.declaredFormat !== undefined) {
    const declared = policy.declaredFormat.toLowerCase();
    const fits = DECLARED[declared];
    if (!fits) out.push({ check: "format_mismatch", reason: `declared format ${JSON.stringify(policy.declaredFormat)} is not one kindling reads` });
    else if (!fits.includes(fmt)) out.push({ check: "format_mismatch", reason: `declared ${declared}, but the content is ${fmt}` });
  }
  out.push(...inspection.failures);
  if (policy.maxVirtualSizeBytes !== undefined && inspection.virtualSize !== undefined && inspection.virtualSize > policy.maxVirtualSizeBytes) {
    out.push({ check: "virtual_size", reason: `the virtual size ${inspection.virtualSize} exceeds the limit ${policy.maxVirtualSizeBytes}` });
  }
  if (inspection.virtualSize === undefined && !COMPRESSIONS.includes(fmt)) {
    out.push({ check: "virtual_size", reason: "the image's virtual size could not be read from its header" });
  }
  return out;
}

/** Throws an UnsafeImageError naming every failed check, or returns the inspection when all pass. */
export function enforcePolicy(inspection: Inspection, policy: ImagePolicy = {}): Inspection {
  const failures = policyFailures(inspection, policy);
  if (failures.length) throw new UnsafeImageError(failures);
  return inspection;
}
