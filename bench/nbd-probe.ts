// Loaded into kindling's NBD daemon by bench/nbd.ts in its profile mode (NODE_OPTIONS=--require),
// never by the product: counts what the server itself allocates through Buffer's public
// functions (the socket's own read buffers come from Node's C++ side and are not counted here),
// garbage collections, event-loop utilisation and delay, and CPU time, and writes them as JSON
// to KINDLING_BENCH_PROBE_OUT for the window the bench marks with SIGUSR2.
import { writeFileSync } from "node:fs";
import { constants, monitorEventLoopDelay, performance, PerformanceObserver } from "node:perf_hooks";

const out = process.env.KINDLING_BENCH_PROBE_OUT;
if (out) {
  const buffers: Record<string, { calls: number; bytes: number }> = {};
  const count = (name: string, bytes: number) => {
    const c = (buffers[name] ??= { calls: 0, bytes: 0 });
    c.calls++;
    c.bytes += bytes;
  };
  // Wrapped once, at load: the server's hot path calls these for every request and reply.
  const { alloc, allocUnsafe, allocUnsafeSlow, from, concat } = Buffer;
  Buffer.alloc = ((size: number, ...rest: unknown[]) => {
    count("Buffer.alloc", size);
    return (alloc as (...a: unknown[]) => Buffer)(size, ...rest);
  }) as typeof Buffer.alloc;
  Buffer.allocUnsafe = ((size: number) => {
    count("Buffer.allocUnsafe", size);
    return allocUnsafe(size);
  }) as typeof Buffer.allocUnsafe;
  Buffer.allocUnsafeSlow = ((size: number) => {
    count("Buffer.allocUnsafeSlow", size);
    return allocUnsafeSlow(size);
  }) as typeof Buffer.allocUnsafeSlow;
  Buffer.from = ((...args: unknown[]) => {
    const b = (from as (...a: unknown[]) => Buffer)(...args);
    count("Buffer.from", b.length);
    return b;
  }) as typeof Buffer.from;
  Buffer.concat = ((list: readonly Uint8Array[], total?: number) => {
    const b = concat(list, total);
    count("Buffer.concat", b.length);
    return b;
  }) as typeof Buffer.concat;

  const gc: Record<string, { count: number; ms: number }> = {};
  const kinds: Record<number, string> = {
    [constants.NODE_PERFORMANCE_GC_MINOR]: "minor",
    [constants.NODE_PERFORMANCE_GC_MAJOR]: "major",
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: "incremental",
    [constants.NODE_PERFORMANCE_GC_WEAKCB]: "weakcb",
  };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = kinds[(e as unknown as { detail: { kind: number } }).detail.kind] ?? "other";
      const g = (gc[kind] ??= { count: 0, ms: 0 });
      g.count++;
      g.ms += e.duration;
    }
  }).observe({ entryTypes: ["gc"] });

  // The bench sends SIGUSR2 as a row starts and again as it ends: the first resets every
  // counter (startup and the handshake are not the row), the second writes the row's numbers.
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  let elu0 = performance.eventLoopUtilization();
  let cpu0 = process.cpuUsage();
  let wall0 = performance.now();
  let started = false;
  process.on("SIGUSR2", () => {
    if (!started) {
      started = true;
      for (const k of Object.keys(buffers)) delete buffers[k];
      for (const k of Object.keys(gc)) delete gc[k];
      delay.reset();
      elu0 = performance.eventLoopUtilization();
      cpu0 = process.cpuUsage();
      wall0 = performance.now();
      return;
    }
    const elu = performance.eventLoopUtilization(elu0);
    const cpu = process.cpuUsage(cpu0);
    writeFileSync(out, JSON.stringify({
      wallMs: performance.now() - wall0,
      cpuUserMs: cpu.user / 1000,
      cpuSystemMs: cpu.system / 1000,
      eventLoop: { utilisation: elu.utilization, activeMs: elu.active, idleMs: elu.idle },
      delayMs: { mean: delay.mean / 1e6, p50: delay.percentile(50) / 1e6, p99: delay.percentile(99) / 1e6, max: delay.max / 1e6 },
      gc,
      buffers,
      maxRssKiB: process.resourceUsage().maxRSS,
    }));
  });
}
