// The list of every probe the inspector runs. All of them run over every image, whatever format
// was declared, because a polyglot is only visible when more than one of them matches.
import { luksProbe, qedProbe } from "./banned";
import { compressionProbes } from "./compression";
import { isoProbe } from "./iso";
import { gptProbe, mbrProbe } from "./partitions";
import { qcow2Probe, qcowV1Probe } from "./qcow2";
import type { FormatProbe } from "./types";
import { vdiProbe } from "./vdi";
import { vhdProbe } from "./vhd";
import { vhdxProbe } from "./vhdx";
import { DEFAULT_VMDK_TYPES, vmdkProbe } from "./vmdk";

export function allProbes(vmdkTypes: readonly string[] = DEFAULT_VMDK_TYPES): FormatProbe[] {
  return [qcow2Probe, qcowV1Probe, vmdkProbe(vmdkTypes), vhdProbe, vhdxProbe, vdiProbe, qedProbe, luksProbe, isoProbe, gptProbe, mbrProbe, ...compressionProbes];
}
