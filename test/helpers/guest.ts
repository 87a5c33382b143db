import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { Qmp } from "./qmp";

// A tiny qemu guest for tests that hand a hypervisor a volume: Debian's cloud kernel (unpacked
// from its package into a cache, never installed), an initramfs built here holding busybox,
// the virtio modules and a script, and qemu-system-x86_64 with KVM where it works, else TCG.
// Disks are added over QMP from connection info alone, as a hypervisor on another host would.

/** The virtio modules a virtio-blk disk needs on the cloud kernel, in load order (ext4 is built in). */
const MODULES = ["virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "virtio_blk"];
const MODULE_PATHS: Record<string, string> = {
  virtio: "drivers/virtio/virtio.ko",
  virtio_ring: "drivers/virtio/virtio_ring.ko",
  virtio_pci_legacy_dev: "drivers/virtio/virtio_pci_legacy_dev.ko",
  virtio_pci_modern_dev: "drivers/virtio/virtio_pci_modern_dev.ko",
  virtio_pci: "drivers/virtio/virtio_pci.ko",
  virtio_blk: "drivers/block/virtio_blk.ko",
};

function cacheDir(): string {
  return join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "kindling-test", "guest-kernel");
}

const has = (tool: string) => spawnSync("sh", ["-c", `command -v ${tool}`]).status === 0;

/** Why a guest cannot boot here, or undefined when it can. */
export function guestMissing(): string | undefined {
  const missing = ["qemu-system-x86_64", "dpkg-deb", "apt-get"].filter((t) => !has(t));
  if (!existsSync("/bin/busybox")) missing.push("/bin/busybox (busybox-static)");
  if (missing.length) return `cannot boot a test guest: ${missing.join(", ")} missing; make setup installs qemu-system-x86 and busybox-static as root`;
  try {
    guestKernel();
  } catch (err) {
    return `cannot get Debian's cloud kernel: ${(err as Error).message}`;
  }
  return undefined;
}

export interface GuestKernel {
  vmlinuz: string;
  modules: string[];
}

/**
 * The kernel and modules, from the cache, else from linux-image-cloud-amd64's current package
 * (apt-get download, dpkg-deb -x) into the cache. Only vmlinuz and the few modules are kept.
 */
export function guestKernel(): GuestKernel {
  const dir = cacheDir();
  const kernel = { vmlinuz: join(dir, "vmlinuz"), modules: MODULES.map((m) => join(dir, `${m}.ko`)) };
  if ([kernel.vmlinuz, ...kernel.modules].every((f) => existsSync(f))) return kernel;
  const depends = execFileSync("apt-cache", ["depends", "linux-image-cloud-amd64"], { encoding: "utf8" });
  const pkg = /Depends:\s+(linux-image-\S+-cloud-amd64)/.exec(depends)?.[1];
  if (!pkg) throw new Error("apt-cache knows no linux-image-cloud-amd64 (apt-get update?)");
  const work = `${dir}.partial-${process.pid}`;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    execFileSync("apt-get", ["download", pkg], { cwd: work, stdio: "ignore" });
    const deb = readdirSync(work).find((f) => f.endsWith(".deb"));
    if (!deb) throw new Error(`apt-get download ${pkg} gave no package`);
    execFileSync("dpkg-deb", ["-x", join(work, deb), join(work, "x")]);
    const boot = join(work, "x", "boot");
    const vmlinuz = readdirSync(boot).find((f) => f.startsWith("vmlinuz-"));
    const release = readdirSync(join(work, "x", "lib", "modules"))[0];
    if (!vmlinuz || !release) throw new Error(`${pkg} holds no vmlinuz or modules`);
    const out = join(work, "kernel");
    mkdirSync(out);
    copyFileSync(join(boot, vmlinuz), join(out, "vmlinuz"));
    for (const m of MODULES) copyFileSync(join(work, "x", "lib", "modules", release, "kernel", MODULE_PATHS[m]), join(out, `${m}.ko`));
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(join(dir, ".."), { recursive: true });
    renameSync(out, dir);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return kernel;
}

/** A newc cpio archive (what the kernel unpacks as its initramfs), of directories, files, links and device nodes. */
type Entry = { name: string; mode: number; data?: Buffer; rdev?: [number, number] };

function cpio(entries: Entry[]): Buffer {
  const parts: Buffer[] = [];
  const pad = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  let ino = 1;
  for (const e of [...entries, { name: "TRAILER!!!", mode: 0 }]) {
    const data = e.data ?? Buffer.alloc(0);
    const name = Buffer.from(`${e.name}\0`);
    const fields = [ino++, e.mode, 0, 0, 1, 0, data.length, 0, 0, e.rdev?.[0] ?? 0, e.rdev?.[1] ?? 0, name.length, 0];
    const header = Buffer.from(`070701${fields.map((f) => f.toString(16).padStart(8, "0")).join("")}`);
    parts.push(header, name, pad(header.length + name.length), data, pad(data.length));
  }
  return Buffer.concat(parts);
}

/**
 * An initramfs whose /init sets up /proc, /sys and /dev, loads the virtio modules and runs
 * `script` (busybox sh). The guest says what it sees on the serial console as lines starting
 * "GUEST ", and powers off when the script ends.
 */
export function buildInitramfs(path: string, kernel: GuestKernel, script: string): void {
  const init = [
    "#!/bin/busybox sh",
    "/bin/busybox --install -s /bin",
    "mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev",
    ...MODULES.map((m) => `insmod /lib/${m}.ko`),
    "say() { echo \"GUEST $*\"; }",
    "waitdev() { while [ ! -b /dev/$1 ]; do sleep 0.2; done; }",
    script,
    "say END",
    "poweroff -f",
  ].join("\n");
  const dirs = ["bin", "dev", "proc", "sys", "lib", "mnt", "tmp"];
  writeFileSync(path, cpio([
    ...dirs.map((d) => ({ name: d, mode: 0o40755 })),
    { name: "dev/console", mode: 0o20600, rdev: [5, 1] },
    { name: "bin/busybox", mode: 0o100755, data: readFileSync("/bin/busybox") },
    { name: "bin/sh", mode: 0o120777, data: Buffer.from("busybox") },
    ...kernel.modules.map((m, i) => ({ name: `lib/${MODULES[i]}.ko`, mode: 0o100644, data: readFileSync(m) })),
    { name: "init", mode: 0o100755, data: Buffer.from(`${init}\n`) },
  ]));
}

let kvm: boolean | undefined;

/**
 * Whether guests run under KVM here: /dev/kvm opens and a kernel boots under it to its panic
 * (no root) within a few seconds. Nested or restricted KVM can have the device and still fail
 * (qemu asserts on an MSR, or the guest hangs), so it is tried, once; else TCG, slower but the same.
 */
export function kvmUsable(): boolean {
  if (kvm !== undefined) return kvm;
  if (!existsSync("/dev/kvm")) return (kvm = false);
  const r = spawnSync("qemu-system-x86_64", ["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-accel", "kvm", "-cpu", "host", "-m", "128",
    "-kernel", guestKernel().vmlinuz, "-append", "console=ttyS0 panic=-1", "-serial", "stdio"], { encoding: "utf8", timeout: 8000, killSignal: "SIGKILL" });
  return (kvm = r.status === 0 && /Kernel panic/.test(r.stdout ?? ""));
}

/**
 * The lines of a console's output that are complete: a console is written in pieces, and a
 * line still being written ("SIZE 20971" of "SIZE 2097152") would match as if it were all of it.
 */
export function wholeLines(output: string): string[] {
  return output.slice(0, output.lastIndexOf("\n") + 1).split(/\r?\n/);
}

/** A running guest: its serial console's lines, and QMP. Stopped by its pid. */
export class Guest {
  private output = "";
  private constructor(readonly child: ChildProcess, readonly qmp: Qmp) {
    child.stdout?.setEncoding("utf8").on("data", (d: string) => (this.output += d));
    child.stderr?.setEncoding("utf8").on("data", (d: string) => (this.output += d));
  }

  /** Starts paused (-S): disks are added over QMP, then `cont` boots the kernel. */
  static async start(dir: string, kernel: GuestKernel, initramfs: string): Promise<Guest> {
    const socket = join(dir, "qmp.sock");
    const child = spawn("qemu-system-x86_64", [
      "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-S",
      ...(kvmUsable() ? ["-accel", "kvm", "-cpu", "host"] : ["-accel", "tcg", "-cpu", "max"]), "-m", "256", "-smp", "1",
      "-kernel", kernel.vmlinuz, "-initrd", initramfs, "-append", "console=ttyS0 panic=-1 quiet loglevel=3",
      "-serial", "stdio", "-qmp", `unix:${socket},server=on,wait=off`,
    ], { stdio: ["ignore", "pipe", "pipe"] });
    const qmp = await Qmp.open(socket).catch((err) => {
      child.kill("SIGKILL");
      throw err;
    });
    return new Guest(child, qmp);
  }

  /** Everything the guest said ("GUEST ..." lines). */
  lines(): string[] {
    return wholeLines(this.output).filter((l) => l.startsWith("GUEST ")).map((l) => l.slice(6).trim());
  }

  get console(): string {
    return this.output;
  }

  /**
   * The first line the guest says that matches, waiting for it at the guest's own pace; a guest
   * that says nothing of it for minutes is stuck (a backstop against a hang, not a measure).
   */
  async said(pattern: RegExp, what: string): Promise<RegExpMatchArray> {
    for (let i = 0; i < 3000; i++) {
      const line = this.lines().find((l) => pattern.test(l));
      if (line) return line.match(pattern) as RegExpMatchArray;
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`the guest ended before it said ${what}:\n${this.output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`the guest never said ${what}:\n${this.output}`);
  }

  /** Adds a disk (read-only when asked) on a hot-plugged virtio-blk device with the given serial. */
  async addDisk(id: string, blockdev: Record<string, unknown>, opts: { readOnly?: boolean; serial?: string } = {}): Promise<void> {
    await this.qmp.run("blockdev-add", { "node-name": id, "read-only": opts.readOnly ?? false, ...blockdev });
    await this.qmp.run("device_add", { driver: "virtio-blk-pci", id: `dev-${id}`, drive: id, ...(opts.serial ? { serial: opts.serial } : {}) });
  }

  async stop(): Promise<void> {
    this.qmp.close();
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGKILL");
    await exited;
  }

  async exited(): Promise<number | null> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    return new Promise((resolve) => this.child.once("exit", (code) => resolve(code)));
  }
}

/**
 * qemu's blockdev (a raw node over the protocol's) for a connection, from its connection info
 * alone; secrets (the cephx key) go to qemu as secret objects reading files in `secretDir`.
 * `objects` are to be added (object-add) first.
 */
export function blockdevFor(info: { driver_volume_type: string; data: Record<string, any> }, secretDir: string, id: string): { objects: Array<Record<string, unknown>>; blockdev: Record<string, unknown> } {
  const d = info.data;
  switch (info.driver_volume_type) {
    case "local":
      return { objects: [], blockdev: { driver: "raw", file: { driver: "file", filename: d.device_path } } };
    case "nbd": {
      const objects: Array<Record<string, unknown>> = [];
      let tlsCreds: string | undefined;
      if (d.tls) {
        tlsCreds = `tls-${id}`;
        const dir = join(secretDir, tlsCreds);
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        if (d.tls_mode !== "x509") throw new Error("this helper sets up x509 consumers only");
        writeFileSync(join(dir, "ca-cert.pem"), d.tls_ca_certificate);
        objects.push({ "qom-type": "tls-creds-x509", id: tlsCreds, dir, endpoint: "client" });
      }
      return { objects, blockdev: { driver: "raw", file: { driver: "nbd", server: { type: "inet", host: d.host, port: String(d.port) }, export: d.export_name, ...(tlsCreds ? { "tls-creds": tlsCreds } : {}) } } };
    }
    case "rbd": {
      const secret = `key-${id}`;
      const keyFile = join(secretDir, secret);
      writeFileSync(keyFile, d.key, { mode: 0o600 });
      return {
        objects: [{ "qom-type": "secret", id: secret, file: keyFile, format: "base64" }],
        blockdev: { driver: "raw", file: { driver: "rbd", pool: d.pool, image: d.image, user: d.auth_username, "key-secret": secret, server: (d.hosts as string[]).map((host, i) => ({ host, port: String(d.ports[i]) })) } },
      };
    }
    default:
      throw new Error(`no qemu blockdev for ${info.driver_volume_type}`);
  }
}
