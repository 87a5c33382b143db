import type { Progress } from "../drivers/contract";
import { formatBytes } from "../util/sizes";

/**
 * A one-line progress bar on stderr for long copies, drawn only when stderr is a terminal
 * (pipelines and --json consumers get clean output). Redraws at most ten times a second.
 */
export function progressBar(label: string): { onProgress?: (p: Progress) => void; done: () => void } {
  if (!process.stderr.isTTY) return { done: () => undefined };
  const started = Date.now();
  let last = 0;
  let drawn = false;
  const draw = (p: Progress) => {
    const now = Date.now();
    if (now - last < 100 && p.done < p.total) return;
    last = now;
    const fraction = p.total ? p.done / p.total : 1;
    const width = 30;
    const filled = Math.round(fraction * width);
    const rate = p.done / Math.max((now - started) / 1000, 0.001);
    process.stderr.write(`\r${label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ${formatBytes(p.done)} / ${formatBytes(p.total)} ${formatBytes(rate)}/s `);
    drawn = true;
  };
  return { onProgress: draw, done: () => drawn && process.stderr.write("\n") };
}
