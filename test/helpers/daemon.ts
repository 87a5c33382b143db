import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { KINDLING } from "./cli";

/** A port free right now on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** `kindling nbd serve` as a real process. */
export class Daemon {
  private constructor(readonly child: ChildProcess, readonly port: number, readonly log: () => string) {}

  /** `args`: more options for `nbd serve` (--advertise, --tls-cert...). */
  static async start(config: string, port: number, env: Record<string, string> = {}, args: string[] = []): Promise<Daemon> {
    let output = "";
    const child = spawn(KINDLING, ["--config", config, "nbd", "serve", "--listen", `127.0.0.1:${port}`, ...args], {
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", KINDLING_LOG_LEVEL: "info", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout?.on("data", (d) => (output += d));
    child.stderr?.on("data", (d) => (output += d));
    for (let i = 0; i < 200 && !output.includes("serving NBD"); i++) {
      if (child.exitCode !== null) throw new Error(`nbd serve exited: ${output}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    if (!output.includes("serving NBD")) throw new Error(`nbd serve did not start: ${output}`);
    return new Daemon(child, port, () => output);
  }

  get uri(): string {
    return `nbd://127.0.0.1:${this.port}`;
  }

  /** SIGTERM, and the exit code once it has drained. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.child.exitCode;
    const exited = new Promise<number | null>((resolve) => this.child.once("exit", (code) => resolve(code)));
    this.child.kill(signal);
    return exited;
  }
}
