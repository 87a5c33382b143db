// The image inspector's public surface: stream or file inspection, the policy, the qemu-img
// cross-check, and the error they raise.
export { checkImageFile, type CheckedImage, type ImageCheckOptions } from "./check";
export { UnsafeImageError } from "./errors";
export { inspectFile } from "./file";
export { ImageInspector, DEFAULT_PREFIX_BYTES, type InspectorOptions } from "./inspector";
export { DEFAULT_ALLOWED_FORMATS, enforcePolicy, policyFailures, type ImagePolicy } from "./policy";
export { crossCheckQemuInfo, qemuImgInfo, qemuInfoArgs, QEMU_INFO_LIMITS, type QemuImgInfo, type Runner } from "./qemu-info";
export type { CheckFailure, DetectedFormat, Inspection } from "./types";
export { DEFAULT_VMDK_TYPES } from "./vmdk";
