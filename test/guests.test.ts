// A real qemu guest handed a volume the way a hypervisor is: from its connection info alone, per
// protocol (local, nbd over TLS, rbd with its own cephx user). The guest makes a filesystem and
// writes a file; the file is verified in the guest on a snapshot's copy handed over the same
// way; the volume is extended while the guest runs, and what the guest sees is asserted along
// with what `kindling volume extend` said to do. One boot per protocol.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { CephCluster, cephMissing } from "./helpers/ceph";
import { cliFor, kindling } from "./helpers/cli";
import { Daemon, freePort } from "./helpers/daemon";
import { removeDir, tempDir } from "./helpers/env";
import { Guest, blockdevFor, buildInitramfs, guestKernel, guestMissing, kvmUsable } from "./helpers/guest";

const GiB = 1024 ** 3;

/** Writes a filesystem and a file on vda; verifies the file on vdb once it appears; then reports every size vda takes. */
const SCRIPT = `
waitdev vda
say SIZE $(cat /sys/block/vda/size)
mke2fs -q /dev/vda && mount -t ext2 /dev/vda /mnt || say FAILED mkfs
dd if=/dev/urandom of=/mnt/data bs=64k count=16 2>/dev/null
say WROTE $(md5sum /mnt/data | cut -d' ' -f1)
umount /mnt && sync
waitdev vdb
mount -t ext2 -o ro /dev/vdb /mnt && say VERIFIED $(md5sum /mnt/data | cut -d' ' -f1) || say FAILED verify
umount /mnt
prev=$(cat /sys/block/vda/size)
while true; do s=$(cat /sys/block/vda/size); [ "$s" = "$prev" ] || say SIZE $s; prev=$s; sleep 0.2; done
`;

interface Info {
  driver_volume_type: string;
  data: Record<string, any>;
}

const missing = guestMissing();

describe("a qemu guest uses connection info as given", { skip: missing }, () => {
  let dir: string;
  let initramfs: string;
  before(() => {
    dir = tempDir("kindling-guests-");
    initramfs = join(dir, "initramfs.cpio");
    buildInitramfs(initramfs, guestKernel(), SCRIPT);
  });
  after(() => removeDir(dir));

  /**
   * The whole story on one guest: `volume` is given to it as vda from `info`; once it has
   * written, `copyOf()` makes a copy of a snapshot and returns its connection info, given as
   * vdb (read-only when `readOnlyCopy`); then `extend()` grows the volume and the hypervisor is
   * asked to resize vda. Returns what the guest said and what block_resize answered.
   */
  async function story(name: string, info: Info, copyOf: () => Promise<Info>, extend: () => Record<string, any>, readOnlyCopy: boolean) {
    const work = join(dir, name);
    mkdirSync(work, { mode: 0o700 });
    const guest = await Guest.start(work, guestKernel(), initramfs);
    try {
      const add = async (id: string, i: Info, readOnly: boolean) => {
        const { objects, blockdev } = blockdevFor(i, work, id);
        for (const o of objects) await guest.qmp.run("object-add", o);
        // An export appears at its server within its poll interval: qemu's first try may come before.
        for (let attempt = 0; ; attempt++) {
          try {
            await guest.addDisk(id, blockdev, { readOnly, serial: id });
            return;
          } catch (err) {
            if (attempt > 30) throw err;
            await sleep(200);
          }
        }
      };
      await add("vol", info, false);
      await guest.qmp.run("cont");
      const [, firstSize] = await guest.said(/^SIZE (\d+)$/, "the disk's size");
      assert.equal(Number(firstSize) * 512, GiB, "the guest sees the volume's size");
      const [, wrote] = await guest.said(/^WROTE ([0-9a-f]{32})$/, "that it wrote the file");
      await add("copy", await copyOf(), readOnlyCopy);
      const [, verified] = await guest.said(/^VERIFIED ([0-9a-f]{32})$/, "the file on the copy");
      assert.equal(verified, wrote, "the copy holds what the guest wrote");
      const extended = extend();
      const resize = await guest.qmp.send("block_resize", { "node-name": "vol", size: extended.expansion.sizeBytes });
      return { guest, extended, resize };
    } catch (err) {
      await guest.stop();
      throw new Error(`${(err as Error).message}\nguest console:\n${guest.console}`);
    }
  }

  test(`local: a file volume, its clone from a snapshot, block_resize after extend (${kvmUsable() ? "KVM" : "TCG"})`, async () => {
    const config = join(dir, "local.json");
    writeFileSync(config, JSON.stringify({ backends: { b: { driver: "file", path: join(dir, "local-volumes") } } }));
    const cli = cliFor(config);
    cli("volume", "create", "disk", "--size", "1");
    const info = cli("connect", "disk", "--protocol", "local").connectionInfo as Info;
    const { guest, extended, resize } = await story("local", info, async () => {
      cli("snapshot", "create", "disk", "written");
      cli("volume", "create", "copy", "--size", "1", "--from-snapshot", "written");
      return cli("connect", "copy", "--protocol", "local").connectionInfo as Info;
    }, () => cli("volume", "extend", "disk", "--size", "2"), false);
    try {
      assert.equal(extended.expansion.node_expansion_required, true);
      assert.deepEqual(extended.expansion.connections.map((c: any) => c.consumerAction), ["block_resize"], "extend says the hypervisor must block_resize");
      assert.ok(!resize.error, JSON.stringify(resize.error));
      const [, grown] = await guest.said(/^SIZE (4194304)$/, "the grown size");
      assert.equal(Number(grown) * 512, 2 * GiB, "after block_resize the guest sees the new size");
    } finally {
      await guest.stop();
    }
  });

  test("nbd over TLS: the volume and a snapshot exported read-only; qemu cannot grow an NBD disk, and extend says to reconnect", async () => {
    const config = join(dir, "nbd.json");
    writeFileSync(config, JSON.stringify({ backends: { b: { driver: "file", path: join(dir, "nbd-volumes") } } }));
    const pki = join(dir, "pki");
    mkdirSync(pki);
    spawnSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", join(pki, "key.pem"), "-out", join(pki, "cert.pem"),
      "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
    const daemon = await Daemon.start(config, await freePort(), {}, ["--tls-cert", join(pki, "cert.pem"), "--tls-key", join(pki, "key.pem")]);
    const cli = cliFor(config);
    try {
      cli("volume", "create", "disk", "--size", "1");
      const info = cli("connect", "disk", "--protocol", "nbd").connectionInfo as Info;
      assert.equal(info.data.tls, true);
      const { guest, extended, resize } = await story("nbd", info, async () => {
        cli("snapshot", "create", "disk", "written");
        return cli("connect", "written", "--protocol", "nbd").connectionInfo as Info;
      }, () => cli("volume", "extend", "disk", "--size", "2"), true);
      try {
        assert.deepEqual(extended.expansion.connections.map((c: any) => [c.protocol, c.consumerAction]).sort(), [["nbd", "reconnect"], ["nbd", "reconnect"]]);
        assert.match(resize.error?.desc ?? "", /Cannot grow NBD nodes/, "qemu refuses, as extend said it would");
        // A client connecting now gets the new size from the server.
        const creds = join(dir, "nbd", "tls-vol");
        const size = spawnSync("nbdinfo", ["--size", `${info.data.tls_uri}?tls-certificates=${creds}`], { encoding: "utf8" });
        assert.equal(size.stdout.trim(), String(2 * GiB), size.stderr);
      } finally {
        await guest.stop();
      }
    } finally {
      await daemon.stop();
    }
  });

  describe("rbd", { skip: cephMissing() }, () => {
    let cluster: CephCluster;
    before(async () => {
      cluster = await CephCluster.start(["volumes"]);
    });
    after(() => {
      cluster?.stop();
      if (cluster) removeDir(dirname(cluster.dir));
    });

    test("rbd: a cephx user per connection, caps on the pool, removed on disconnect; a clone verified; block_resize after extend", async () => {
      const adminKey = /key\s*=\s*(\S+)/.exec(cluster.admin("ceph", ["auth", "get", "client.admin"]))?.[1] ?? "";
      const config = join(dir, "rbd.json");
      // Records beside the test's other files, not in the user's data home.
      const persistence = { storage: "sqlite", path: join(dir, "rbd-records.db") };
      writeFileSync(config, JSON.stringify({ persistence, backends: { r: { driver: "rbd", pool: "volumes", monHost: cluster.monHost, user: "admin", key: adminKey } } }), { mode: 0o600 });
      const cli = cliFor(config);
      cli("volume", "create", "disk", "--size", "1");
      const connected = kindling(["--config", config, "--json", "connect", "disk", "--protocol", "rbd", "--show-secrets"]);
      assert.equal(connected.code, 0, connected.stderr);
      const info = connected.json().connectionInfo as Info;
      const user = info.data.auth_username as string;
      assert.equal(info.data.auth_scope, "attachment");
      assert.match(user, /^kindling-attachment-/);
      // Compared, never printed: a failed assertion shows its values.
      assert.ok(info.data.key !== adminKey, "the admin key is not what is handed out");
      assert.ok(info.data.keyring === `[client.${user}]\n\tkey = ${info.data.key}\n`, "the keyring os-brick reads holds the connection's user and key");
      assert.match(info.data.secret_uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      assert.ok(!JSON.stringify(info).includes(cluster.dir), "no path on the kindling host");
      const caps = cluster.admin("ceph", ["auth", "get", `client.${user}`]);
      assert.match(caps, /caps mon = "profile rbd"/);
      assert.match(caps, /caps osd = "profile rbd pool=volumes"/);
      const { guest, extended, resize } = await story("rbd", info, async () => {
        cli("snapshot", "create", "disk", "written");
        cli("volume", "create", "copy", "--size", "1", "--from-snapshot", "written");
        const r = kindling(["--config", config, "--json", "connect", "copy", "--protocol", "rbd", "--show-secrets"]);
        assert.equal(r.code, 0, r.stderr);
        return r.json().connectionInfo as Info;
      }, () => cli("volume", "extend", "disk", "--size", "2"), false);
      try {
        assert.deepEqual(extended.expansion.connections.map((c: any) => c.consumerAction), ["block_resize"]);
        assert.ok(!resize.error, JSON.stringify(resize.error));
        const [, grown] = await guest.said(/^SIZE (4194304)$/, "the grown size");
        assert.equal(Number(grown) * 512, 2 * GiB);
      } finally {
        await guest.stop();
      }
      // Revoking one consumer is ending its connection: its user goes, the backend's key stays.
      cli("disconnect", "disk");
      const gone = spawnSync("ceph", ["--conf", cluster.conf, "auth", "get", `client.${user}`], { encoding: "utf8" });
      assert.notEqual(gone.status, 0, "the connection's cephx user is removed");
      cli("disconnect", "copy");
    });

    test("rbd: a backend user that may not make cephx users (no admin) hands out its own key, and says so", () => {
      const config = join(dir, "rbd-restricted.json");
      writeFileSync(config, JSON.stringify({ persistence: { storage: "sqlite", path: join(dir, "rbd-restricted.db") }, backends: { r: cluster.backend("r") } }), { mode: 0o600 });
      const cli = cliFor(config);
      cli("volume", "create", "narrow", "--size", "1");
      const info = cli("connect", "narrow", "--protocol", "rbd").connectionInfo as Info;
      assert.equal(info.data.auth_scope, "backend");
      assert.equal(info.data.auth_username, "kindling");
      assert.ok(info.data.key === "[secret]" && info.data.keyring === "[secret]", "key and keyring masked unless --show-secrets");
      const xml = kindling(["--config", config, "connect", "narrow", "--protocol", "rbd", "--format", "libvirt"]);
      assert.equal(xml.code, 0, xml.stderr);
      assert.ok(xml.stdout.includes(`<secret type='ceph' uuid='${info.data.secret_uuid}'/>`), xml.stdout);
      assert.ok(xml.stdout.includes(`<auth username='kindling'>`));
      const secret = kindling(["--config", config, "connect", "narrow", "--protocol", "rbd", "--format", "libvirt-secret"]);
      assert.ok(secret.stdout.includes(`<uuid>${info.data.secret_uuid}</uuid>`), secret.stdout);
      assert.ok(!xml.stdout.includes(cluster.key) && !secret.stdout.includes(cluster.key), "no key in the XML");
      cli("disconnect", "narrow");
      cli("volume", "delete", "narrow");
    });
  });
});
