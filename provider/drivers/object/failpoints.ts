// Crash points for the crash tests: KINDLING_OBJECT_FAILPOINT=name:n kills this process with
// SIGKILL the n-th time it reaches `name` (a kill -9 at exactly that step: between a commit's
// PUT and its acknowledgement, inside a checkpoint, in the middle of a sweep). Unset, it costs
// one lookup.

const spec = process.env.KINDLING_OBJECT_FAILPOINT;
const [armed, countText] = spec ? spec.split(":") : [];
let left = Number(countText ?? "1");

export function failpoint(name: string): void {
  if (armed !== name) return;
  if (--left <= 0) process.kill(process.pid, "SIGKILL");
}
