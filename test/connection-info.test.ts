// Connection info as consumers use it, in Cinder's shape: `local` and `nbd` from the library,
// `kindling connect --json` and the libvirt XML agreeing; an NBD export's address is where a
// running server really serves it (or what it advertises), and its TLS fields are enough for
// qemu (a tls-creds object) and libnbd (nbds://) to connect with nothing else known.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Backend } from "../provider/library";
import { SqlitePersistence } from "../provider/persistence/sqlite";
import { cliFor, kindling } from "./helpers/cli";
import { until } from "./helpers/wait";
import { Daemon, freePort } from "./helpers/daemon";
import { removeDir, tempDir } from "./helpers/env";

function sh(command: string, args: string[]) {
  const r = spawnSync(command, args, { encoding: "utf8", timeout: 60_000 });
  return { code: r.status ?? -1, out: (r.stdout ?? "") + (r.stderr ?? "") };
}


interface Info {
  driver_volume_type: string;
  data: Record<string, any>;
}

describe("connection info in Cinder's shape, usable as given", () => {
  let dir: string;
  let config: string;
  const daemons: Daemon[] = [];
  const cli = (...args: string[]) => cliFor(config)(...args);
  const start = async (args: string[] = []) => {
    const d = await Daemon.start(config, await freePort(), {}, args);
    daemons.push(d);
    return d;
  };
  const stop = async (d: Daemon) => {
    await d.stop();
    daemons.splice(daemons.indexOf(d), 1);
  };

  before(() => {
    dir = tempDir();
    config = join(dir, "kindling.json");
    writeFileSync(config, JSON.stringify({ backends: { b: { driver: "file", path: join(dir, "volumes") } } }));
  });
  after(async () => {
    for (const d of daemons) await d.stop("SIGKILL");
    removeDir(dir);
  });

  test("local: driver_volume_type and device_path, the same from the library, the CLI and a record written in the old shape", async () => {
    const made = cli("volume", "create", "plain", "--size", "1");
    const record = cli("connect", "plain", "--protocol", "local");
    const info = record.connectionInfo as Info;
    assert.equal(info.driver_volume_type, "local");
    assert.equal(info.data.device_path, made.location);
    assert.equal(info.data.access_mode, "rw");
    assert.ok(!("protocol" in info), "no kindling-only top-level key");
    const backend = await Backend.open({ name: "b", driver: "file", path: join(dir, "volumes") });
    try {
      const [connection] = await (await backend.getVolume("plain")).connections();
      assert.deepEqual(connection.connectionInfo, info, "the library gives what the CLI printed");
      // A record from before the Cinder shape is read as if written now.
      const store = backend.persistence as SqlitePersistence;
      const old = connection.dump();
      await store.setConnection({ ...old, connectionInfo: { protocol: "local", data: old.connectionInfo.data } as never });
      const [reread] = await (await backend.getVolume("plain")).connections();
      assert.deepEqual(reread.connectionInfo, info);
    } finally {
      await backend.close();
    }
    const disk = kindling(["--config", config, "connect", "plain", "--protocol", "local", "--format", "libvirt", "--target", "vdc"]);
    assert.equal(disk.code, 0, disk.stderr);
    assert.match(disk.stdout, /^<disk type='file' device='disk'>/);
    assert.ok(disk.stdout.includes(`<source file='${made.location}'/>`));
    assert.ok(disk.stdout.includes("<target dev='vdc' bus='virtio'/>"));
    const refused = kindling(["--config", config, "connect", "plain", "--protocol", "local", "--format", "libvirt-secret"]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /no libvirt secret/);
    cli("disconnect", "plain");
  });

  test("nbd: the address of the server that really serves it, its --advertise address, or the default while none runs", async () => {
    cli("volume", "create", "served", "--size", "1");
    // No server: the default address, and it says so.
    const before = cli("connect", "served", "--protocol", "nbd").connectionInfo as Info;
    assert.equal(before.driver_volume_type, "nbd");
    assert.equal(before.data.address_source, "default");
    assert.equal(before.data.port, 10809);
    cli("disconnect", "served");

    const d = await start();
    const info = cli("connect", "served", "--protocol", "nbd").connectionInfo as Info;
    assert.equal(info.data.address_source, "server");
    assert.equal(info.data.host, "127.0.0.1");
    assert.equal(info.data.port, d.port, "the port the server listens on, not the default");
    assert.equal(info.data.uri, `nbd://127.0.0.1:${d.port}/${info.data.export_name}`);
    assert.equal(info.data.tls, false);
    await until(() => sh("nbdinfo", ["--size", info.data.uri]).code === 0, "the export");
    // qemu takes the URI as it is.
    const io = sh("qemu-io", ["-f", "raw", "-c", "write -P 0x61 0 64k", "-c", "read -P 0x61 0 64k", info.data.uri]);
    assert.equal(io.code, 0, io.out);
    // The library gives the same, for a connection made before the server started too.
    const backend = await Backend.open({ name: "b", driver: "file", path: join(dir, "volumes") });
    try {
      const [connection] = await (await backend.getVolume("served")).connections();
      assert.equal((await connection.currentInfo()).data.port, d.port);
    } finally {
      await backend.close();
    }
    const xml = kindling(["--config", config, "connect", "served", "--protocol", "nbd", "--format", "libvirt"]);
    assert.equal(xml.code, 0, xml.stderr);
    assert.ok(xml.stdout.includes(`<source protocol='nbd' name='${info.data.export_name}'>`), xml.stdout);
    assert.ok(xml.stdout.includes(`<host name='127.0.0.1' port='${d.port}'/>`));
    cli("disconnect", "served");
    await stop(d);

    // Told to advertise another address (a NAT, a wildcard listener): that is what consumers get.
    const advertised = await start(["--advertise", "nbd.example.net:4242"]);
    const far = cli("connect", "served", "--protocol", "nbd").connectionInfo as Info;
    assert.equal(far.data.host, "nbd.example.net");
    assert.equal(far.data.port, 4242);
    cli("disconnect", "served");
    await stop(advertised);
    // Stopped, the server's address is no longer given out.
    assert.equal((cli("connect", "served", "--protocol", "nbd").connectionInfo as Info).data.address_source, "default");
    cli("disconnect", "served");
  });

  test("nbd over TLS: the CA certificate (x509) or the identity (psk) in the info is all qemu and libnbd need", async () => {
    const pki = join(dir, "pki");
    mkdirSync(pki);
    sh("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", join(pki, "server-key.pem"), "-out", join(pki, "server-cert.pem"),
      "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]);
    cli("volume", "create", "secure", "--size", "1");
    const d = await start(["--tls-cert", join(pki, "server-cert.pem"), "--tls-key", join(pki, "server-key.pem")]);
    const info = cli("connect", "secure", "--protocol", "nbd").connectionInfo as Info;
    assert.equal(info.data.tls, true);
    assert.equal(info.data.tls_mode, "x509");
    assert.match(info.data.uri, /^nbd:\/\//, "the URI qemu takes");
    assert.match(info.data.tls_uri, /^nbds:\/\//, "the URI libnbd takes");
    assert.match(info.data.tls_ca_certificate, /^-----BEGIN CERTIFICATE-----/);
    assert.ok(!JSON.stringify(info).includes("PRIVATE KEY"), "no private key in connection info");
    // A consumer's own credentials folder, made from the info alone.
    const creds = join(dir, "consumer-x509");
    mkdirSync(creds);
    writeFileSync(join(creds, "ca-cert.pem"), info.data.tls_ca_certificate);
    await until(() => sh("nbdinfo", ["--size", `${info.data.tls_uri}?tls-certificates=${creds}`]).code === 0, "the export over TLS");
    const qemu = (data: Info["data"], object: string) => sh("qemu-io", ["--object", object, "--image-opts",
      `driver=raw,file.driver=nbd,file.server.type=inet,file.server.host=${data.host},file.server.port=${data.port},file.export=${data.export_name},file.tls-creds=tls0`,
      "-c", "write -P 0x62 0 64k", "-c", "read -P 0x62 0 64k"]);
    const x509 = qemu(info.data, `tls-creds-x509,id=tls0,dir=${creds},endpoint=client`);
    assert.equal(x509.code, 0, x509.out);
    assert.equal(sh("qemu-io", ["-f", "raw", "-c", "read 0 4k", info.data.uri]).code === 0, false, "nothing in the clear");
    cli("disconnect", "secure");
    await stop(d);

    const keys = join(dir, "server.psk");
    const key = "cd".repeat(32);
    writeFileSync(keys, `alice:${key}\n`, { mode: 0o600 });
    const p = await start(["--tls-psk", keys]);
    const psk = cli("connect", "secure", "--protocol", "nbd").connectionInfo as Info;
    assert.equal(psk.data.tls_mode, "psk");
    assert.equal(psk.data.tls_psk_identity, "alice");
    assert.ok(!JSON.stringify(psk).includes(key), "the pre-shared key is never in connection info");
    // The consumer was given the key by the operator; the identity comes from the info.
    const pskDir = join(dir, "consumer-psk");
    mkdirSync(pskDir);
    writeFileSync(join(pskDir, "keys.psk"), `${psk.data.tls_psk_identity}:${key}\n`, { mode: 0o600 });
    await until(() => sh("nbdinfo", ["--size", `${psk.data.tls_uri.replace("nbds://", `nbds://${psk.data.tls_psk_identity}@`)}?tls-psk-file=${join(pskDir, "keys.psk")}`]).code === 0, "the export over TLS-PSK");
    const withPsk = qemu(psk.data, `tls-creds-psk,id=tls0,dir=${pskDir},username=${psk.data.tls_psk_identity},endpoint=client`);
    assert.equal(withPsk.code, 0, withPsk.out);
    cli("disconnect", "secure");
    await stop(p);
  });
});
