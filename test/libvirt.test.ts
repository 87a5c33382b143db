// A throwaway libvirtd (session mode, everything under a temporary directory) attaches a volume
// to a running domain from the XML `kindling connect --format libvirt` printed, and for rbd
// the <secret> it defined with the key set from a file: the guest sees the volume's data. The
// volumes are made from one ext2 image, so the guest checks the same file on each.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { CephCluster, cephMissing } from "./helpers/ceph";
import { cliFor, kindling } from "./helpers/cli";
import { Daemon, freePort } from "./helpers/daemon";
import { removeDir, tempDir } from "./helpers/env";
import { buildInitramfs, guestKernel, guestMissing, wholeLines } from "./helpers/guest";
import { Libvirtd, libvirtMissing } from "./helpers/libvirt";

/** Reports the file on every disk that appears, vda then vdb, then idles. */
const SCRIPT = `
say READY
for d in vda vdb; do
  waitdev $d
  mount -t ext2 -o ro /dev/$d /mnt && say SEEN $d $(md5sum /mnt/data | cut -d' ' -f1) || say FAILED $d
  umount /mnt
done
while true; do sleep 1; done
`;

const skip = guestMissing() ?? libvirtMissing() ?? cephMissing();

describe("libvirt attaches the disks kindling describes", { skip }, () => {
  let dir: string;
  let libvirt: Libvirtd | undefined;
  let daemon: Daemon | undefined;
  let cluster: CephCluster | undefined;
  let image: string;
  let md5: string;

  before(async () => {
    dir = tempDir("kindling-libvirt-");
    chmodSync(dir, 0o755);
    // The data: an ext2 image holding one file, made on the host (mke2fs -d), no mount needed.
    const content = join(dir, "content");
    mkdirSync(content);
    const data = randomBytes(1024 * 1024);
    writeFileSync(join(content, "data"), data);
    md5 = createHash("md5").update(data).digest("hex");
    image = join(dir, "fs.img");
    const mkfs = spawnSync("mke2fs", ["-q", "-t", "ext2", "-d", content, "-F", image, "16M"], { encoding: "utf8" });
    assert.equal(mkfs.status, 0, mkfs.stderr);
    cluster = await CephCluster.start(["volumes"]);
    libvirt = await Libvirtd.start(join(dir, "libvirt"));
  });
  after(async () => {
    libvirt?.virsh(["destroy", "guest"]);
    await libvirt?.stop();
    await daemon?.stop();
    cluster?.stop();
    if (cluster) removeDir(dirname(cluster.dir));
    removeDir(dir);
  });

  async function said(log: string, pattern: RegExp, what: string): Promise<RegExpMatchArray> {
    // A backstop against a hung guest, not a measure: the guest says each step when it gets there.
    for (let i = 0; i < 3000; i++) {
      const text = existsSync(log) ? readFileSync(log, "utf8") : "";
      const line = wholeLines(text).find((l) => pattern.test(l));
      if (line) return line.match(pattern) as RegExpMatchArray;
      await sleep(100);
    }
    throw new Error(`the guest never said ${what}:\n${existsSync(log) ? readFileSync(log, "utf8") : "(no console)"}\n${libvirt?.qemuLog("guest")}`);
  }

  test("an nbd disk and an rbd disk with its <secret>, attached live; the guest reads the data on both", async () => {
    const lv = libvirt as Libvirtd;
    const ceph = cluster as CephCluster;
    // The file backend's volume, exported by a server on a port of its own.
    const fileConfig = join(dir, "file.json");
    writeFileSync(fileConfig, JSON.stringify({ backends: { b: { driver: "file", path: join(dir, "volumes") } } }));
    const fileCli = cliFor(fileConfig);
    fileCli("volume", "create", "seen", "--size", "1", "--image", `file:${image}`, "--allow-unverified");
    daemon = await Daemon.start(fileConfig, await freePort());
    const nbd = fileCli("connect", "seen", "--protocol", "nbd", "--format", "libvirt", "--target", "vda");
    // The rbd volume, on a backend whose user may make cephx users: the disk names the connection's own.
    const adminKey = /key\s*=\s*(\S+)/.exec(ceph.admin("ceph", ["auth", "get", "client.admin"]))?.[1] ?? "";
    const rbdConfig = join(dir, "rbd.json");
    writeFileSync(rbdConfig, JSON.stringify({ persistence: { storage: "sqlite", path: join(dir, "rbd.db") }, backends: { r: { driver: "rbd", pool: "volumes", monHost: ceph.monHost, user: "admin", key: adminKey } } }), { mode: 0o600 });
    const made = kindling(["--config", rbdConfig, "--json", "volume", "create", "seen", "--size", "1", "--image", `file:${image}`, "--allow-unverified"]);
    assert.equal(made.code, 0, made.stderr);
    const rbd = kindling(["--config", rbdConfig, "--json", "connect", "seen", "--protocol", "rbd", "--format", "libvirt", "--target", "vdb", "--show-secrets"]);
    assert.equal(rbd.code, 0, rbd.stderr);
    const rbdOut = rbd.json();
    assert.equal(rbdOut.connectionInfo.data.auth_scope, "attachment");
    assert.ok(!rbdOut.disk.includes(rbdOut.connectionInfo.data.key) && !rbdOut.secret.includes(rbdOut.connectionInfo.data.key), "no key in the XML");

    // The domain: the test kernel and initramfs, no disks yet, its console in a file.
    const vm = join(dir, "vm");
    mkdirSync(vm);
    Libvirtd.give(vm);
    copyFileSync(guestKernel().vmlinuz, join(vm, "vmlinuz"));
    buildInitramfs(join(vm, "initramfs"), guestKernel(), SCRIPT);
    const consoleLog = join(vm, "console.log");
    const write = (name: string, text: string, mode = 0o644) => {
      writeFileSync(join(vm, name), text, { mode });
      Libvirtd.give(join(vm, name));
      return join(vm, name);
    };
    const domain = write("domain.xml", `<domain type='qemu'>
  <name>guest</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>${join(vm, "vmlinuz")}</kernel><initrd>${join(vm, "initramfs")}</initrd><cmdline>console=ttyS0 panic=-1 quiet loglevel=3</cmdline></os>
  <features><acpi/></features>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='${consoleLog}'/><target port='0'/></serial>
  </devices>
</domain>
`);
    lv.ok(["define", domain]);
    lv.ok(["start", "guest"]);
    await said(consoleLog, /GUEST READY/, "that it booted");

    lv.ok(["attach-device", "guest", write("nbd.xml", nbd.disk), "--live"]);
    const [, , nbdSeen] = await said(consoleLog, /GUEST SEEN (vda) ([0-9a-f]{32})/, "the data on the nbd disk");
    assert.equal(nbdSeen, md5, "the guest reads the volume's data over nbd");

    // The secret: defined from the XML, its value from a file (never on a command line).
    lv.ok(["secret-define", write("secret.xml", rbdOut.secret)]);
    const keyFile = write("key", rbdOut.connectionInfo.data.key, 0o600);
    lv.ok(["secret-set-value", "--secret", rbdOut.connectionInfo.data.secret_uuid, "--file", keyFile]);
    lv.ok(["attach-device", "guest", write("rbd.xml", rbdOut.disk), "--live"]);
    const [, , rbdSeen] = await said(consoleLog, /GUEST SEEN (vdb) ([0-9a-f]{32})/, "the data on the rbd disk");
    assert.equal(rbdSeen, md5, "the guest reads the volume's data over rbd, with the connection's own cephx user");
    assert.ok(!lv.ok(["secret-list"]).includes(rbdOut.connectionInfo.data.key));
    lv.ok(["destroy", "guest"]);
  });
});
