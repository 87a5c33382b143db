import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isRoot } from "./env";

// A throwaway libvirtd with its qemu driver, in session mode: every file it keeps (config,
// secrets, domain state, sockets) lives under one temporary directory, nothing in /etc or /run.
// Started by root it runs as `nobody` (session mode is a per-user daemon; root's would be the
// system one); qemu then runs as nobody too and reaches disks over the network (nbd, rbd).

const NOBODY = { uid: 65534, gid: 65534 };

const has = (tool: string) => spawnSync("sh", ["-c", `command -v ${tool}`]).status === 0;

/** Why libvirt cannot run here, or undefined when it can. */
export function libvirtMissing(): string | undefined {
  const missing = ["/usr/sbin/libvirtd", "virsh", "setpriv"].filter((t) => (t.startsWith("/") ? !existsSync(t) : !has(t)));
  if (!existsSync("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so")) missing.push("libvirt's qemu driver");
  return missing.length ? `libvirt is not installed (${missing.join(", ")} missing); make setup installs libvirt-daemon, libvirt-daemon-driver-qemu and libvirt-clients as root` : undefined;
}

export class Libvirtd {
  private constructor(readonly dir: string, private readonly child: ChildProcess, private readonly log: () => string) {}

  /** The environment that makes libvirtd and virsh keep everything under `dir`. */
  private static env(dir: string): Record<string, string> {
    return { PATH: "/usr/sbin:/usr/bin:/bin", HOME: join(dir, "home"), XDG_CONFIG_HOME: join(dir, "config"), XDG_CACHE_HOME: join(dir, "cache"), XDG_RUNTIME_DIR: join(dir, "run") };
  }

  /** Runs `command` as the daemon's user (nobody when this process is root). */
  private static spawnArgs(command: string, args: string[]): [string, string[]] {
    return isRoot ? ["setpriv", ["--reuid", String(NOBODY.uid), "--regid", String(NOBODY.gid), "--clear-groups", command, ...args]] : [command, args];
  }

  /** A file or directory the daemon's user must own (its state, and what qemu reads: kernel, initramfs, key files). */
  static give(path: string): void {
    if (isRoot) chownSync(path, NOBODY.uid, NOBODY.gid);
  }

  static async start(dir: string): Promise<Libvirtd> {
    for (const d of ["config/libvirt", "cache", "run", "home"]) mkdirSync(join(dir, d), { recursive: true });
    // qemu's output goes to files of the daemon's, not through virtlogd (no such daemon here).
    writeFileSync(join(dir, "config", "libvirt", "qemu.conf"), 'stdio_handler = "file"\n');
    for (const d of ["", "config", "config/libvirt", "config/libvirt/qemu.conf", "cache", "run", "home"]) Libvirtd.give(join(dir, d));
    chmodSync(join(dir, "run"), 0o700);
    let output = "";
    const [command, args] = Libvirtd.spawnArgs("/usr/sbin/libvirtd", []);
    const child = spawn(command, args, { cwd: dir, env: Libvirtd.env(dir), stdio: ["ignore", "pipe", "pipe"] });
    child.stdout?.on("data", (d) => (output += d));
    child.stderr?.on("data", (d) => (output += d));
    const daemon = new Libvirtd(dir, child, () => output);
    for (let i = 0; i < 100; i++) {
      if (child.exitCode !== null) throw new Error(`libvirtd exited: ${output}`);
      if (existsSync(join(dir, "run", "libvirt", "libvirt-sock")) && daemon.virsh(["version"]).code === 0) return daemon;
      await sleep(100);
    }
    await daemon.stop();
    throw new Error(`libvirtd did not answer: ${output}`);
  }

  /** virsh against this daemon, as its user; `input` goes to its stdin. */
  virsh(args: string[], input?: string): { code: number; out: string } {
    const [command, full] = Libvirtd.spawnArgs("virsh", ["-c", "qemu:///session", ...args]);
    const r = spawnSync(command, full, { cwd: this.dir, env: Libvirtd.env(this.dir), encoding: "utf8", input, timeout: 60_000 });
    return { code: r.status ?? -1, out: `${r.stdout ?? ""}${r.stderr ?? ""}` };
  }

  /** As virsh, failing with its output. */
  ok(args: string[], input?: string): string {
    const r = this.virsh(args, input);
    if (r.code !== 0) throw new Error(`virsh ${args.join(" ")}: ${r.out}\nlibvirtd: ${this.log().slice(-2000)}`);
    return r.out;
  }

  /** A file qemu wrote for domain `name` (its log), for failure messages. */
  qemuLog(name: string): string {
    const path = join(this.dir, "cache", "libvirt", "qemu", "log", `${name}.log`);
    return existsSync(path) ? readFileSync(path, "utf8") : "";
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGTERM");
    await exited;
  }
}
