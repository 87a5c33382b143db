// `kindling nbd serve` as a daemon: exports follow the records, restarts restore them, writes
// that were flushed survive kill -9, one writer per volume, and QoS per export.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { kindling } from "./helpers/cli";
import { Daemon, freePort } from "./helpers/daemon";
import { until } from "./helpers/wait";
import { deviceSize, needsRoot, removeDir, tempDir } from "./helpers/env";
import { Backend } from "../provider/library";
import { kernelNbdAvailable } from "../provider/attach/kernel-nbd";
import { Project } from "./helpers/pulumi";

function sh(command: string, args: string[]) {
  const r = spawnSync(command, args, { encoding: "utf8", env: { ...process.env, PATH: `/usr/bin:${process.env.PATH}` } });
  return { code: r.status ?? -1, out: (r.stdout ?? "") + (r.stderr ?? "") };
}


describe("kindling nbd serve as a daemon", () => {
  let dir: string;
  let config: string;
  const daemons: Daemon[] = [];
  const cli = (...args: string[]) => {
    const r = kindling(["--config", config, "--json", ...args]);
    assert.equal(r.code, 0, r.stderr);
    return r.json();
  };
  const start = async (env: Record<string, string> = {}) => {
    const d = await Daemon.start(config, await freePort(), env);
    daemons.push(d);
    return d;
  };
  const exportsOf = (d: Daemon) => sh("nbdinfo", ["--list", d.uri]).out;

  before(() => {
    dir = tempDir();
    config = join(dir, "kindling.json");
    writeFileSync(config, JSON.stringify({ backends: { b: { driver: "file", path: join(dir, "volumes") } } }));
  });
  after(async () => {
    for (const d of daemons) await d.stop("SIGKILL");
    removeDir(dir);
  });

  test("exports added and removed take effect without a restart; a restart restores them", async () => {
    const d = await start();
    cli("volume", "create", "later", "--size", "1");
    assert.ok(!exportsOf(d).includes('export="later"'));
    cli("connect", "later", "--protocol", "nbd");
    await until(() => exportsOf(d).includes('export="later"'), "the new export");
    assert.equal(await d.stop(), 0, "SIGTERM: a clean exit");
    const again = await start();
    assert.ok(exportsOf(again).includes('export="later"'), "restored from the records");
    cli("disconnect", "later");
    await until(() => !exportsOf(again).includes('export="later"'), "the export to go");
    assert.equal(await again.stop(), 0);
  });

  test("data flushed before a kill -9 is there after a restart", async () => {
    const volume = cli("volume", "create", "durable", "--size", "1");
    cli("connect", "durable", "--protocol", "nbd");
    const d = await start();
    const r = sh("nbdsh", ["-u", `${d.uri}/durable`, "-c", 'h.pwrite(b"\\x5a" * 65536, 1 << 20); h.flush()']);
    assert.equal(r.code, 0, r.out);
    await d.stop("SIGKILL");
    const again = await start();
    const read = sh("nbdsh", ["-u", `${again.uri}/durable`, "-c", 'import sys; sys.stdout.write(h.pread(65536, 1 << 20).hex())']);
    assert.ok(read.out.trim() === "5a".repeat(65536), `the flushed data is back (${read.out.slice(0, 200)})`);
    assert.ok(readFileSync(volume.location).subarray(1 << 20, (1 << 20) + 65536).equals(Buffer.alloc(65536, 0x5a)));
    await again.stop();
  });

  test("one writer per volume: a second server is refused; a crashed server's lock is taken over", async () => {
    cli("volume", "create", "single", "--size", "1");
    cli("connect", "single", "--protocol", "nbd");
    const fast = { KINDLING_NBD_LOCK_STALE_SECONDS: "2" };
    const first = await start(fast);
    const second = await start(fast);
    assert.ok(exportsOf(first).includes('export="single"'));
    assert.ok(!exportsOf(second).includes('export="single"'), "the second server does not export it");
    assert.match(second.log(), /exported read-write by another server/);
    await sleep(2500);
    assert.ok(!exportsOf(second).includes('export="single"'), "a live server keeps its lock by heartbeat");
    // Crashed: its lock is taken over (on this host at once, since its process is gone).
    await first.stop("SIGKILL");
    await until(() => exportsOf(second).includes('export="single"'), "the lock to be taken over");
    await second.stop();
    // A clean stop gives the lock back at once.
    const third = await start();
    assert.ok(exportsOf(third).includes('export="single"'));
    await third.stop();
  });

  test("read-only exports need no lock: any number of servers serve them", async () => {
    cli("volume", "create", "shared", "--size", "1");
    cli("connect", "shared", "--protocol", "nbd", "--mode", "ro");
    const a = await start();
    const b = await start();
    for (const d of [a, b]) assert.equal(sh("nbdinfo", ["--is", "read-only", `${d.uri}/shared`]).code, 0);
    await a.stop();
    await b.stop();
  });

  test("QoS: an export's total_iops_sec holds its clients to the limit", async () => {
    cli("volume", "create", "slow", "--size", "1", "--qos", "total_iops_sec=50");
    cli("volume", "create", "fast", "--size", "1");
    cli("connect", "slow", "--protocol", "nbd");
    cli("connect", "fast", "--protocol", "nbd");
    const d = await start();
    const iops = (name: string) => {
      const r = sh("fio", ["--name=q", "--ioengine=nbd", `--uri=${d.uri}/${name}`, "--rw=randread", "--bs=4k", "--size=16M", "--iodepth=8", "--runtime=2", "--time_based", "--output-format=json"]);
      return JSON.parse(r.out.slice(r.out.indexOf("{"))).jobs[0].read.iops as number;
    };
    const limited = iops("slow");
    const free = iops("fast");
    assert.ok(limited < 100, `limited to 50 IOPS, measured ${limited}`);
    assert.ok(free > 10 * limited, `unlimited ${free} vs limited ${limited}`);
    await d.stop();
  });

  test("local attach over NBD (the kernel client where the host has it, else nbdfuse and a loop device); detach undoes it", async (t) => {
    if (needsRoot(t)) return;
    const port = await freePort();
    process.env.KINDLING_NBD_ADDRESS = `127.0.0.1:${port}`;
    const daemon = await Daemon.start(config, port);
    daemons.push(daemon);
    const backend = await Backend.open({ name: "b", driver: "file", path: join(dir, "volumes") });
    try {
      const volume = await backend.createVolume({ name: "fused", sizeGiB: 1 });
      const connection = await volume.connect("nbd");
      await until(() => exportsOf(daemon).includes('export="fused"'), "the export");
      const device = await connection.attach();
      // This machine class has no nbd module, so CI takes the nbdfuse path.
      assert.match(device, kernelNbdAvailable() ? /^\/dev\/nbd\d+$/ : /^\/dev\/loop\d+$/);
      assert.equal(deviceSize(device), 1024 ** 3);
      writeFileSync(device, Buffer.alloc(4096, 0x3c), { flag: "r+" });
      await connection.detach();
      assert.ok(readFileSync(volume.location as string).subarray(0, 4096).equals(Buffer.alloc(4096, 0x3c)), "written through NBD into the volume");
      assert.doesNotMatch(sh("losetup", ["--list", "--noheadings", "--output", "BACK-FILE"]).out, /nbdfuse/);
      assert.doesNotMatch(readFileSync("/proc/mounts", "utf8"), /kindling\/nbdfuse/);
      await connection.disconnect();
      await volume.delete();
    } finally {
      delete process.env.KINDLING_NBD_ADDRESS;
      await backend.close();
      // It holds the writer locks of every read-write export of this backend.
      await daemon.stop();
    }
  });

  test("a Pulumi Attachment with protocol nbd gives connection info that nbdinfo accepts, where the running server really listens; a grown Volume says to reconnect", async () => {
    const port = await freePort();
    const daemon = await Daemon.start(config, port, {});
    daemons.push(daemon);
    // No KINDLING_NBD_ADDRESS: the address comes from the server's own record.
    const project = new Project({ name: "b", driver: "file", path: join(dir, "volumes") }, "kindling-nbd");
    try {
      project.init();
      const program = (sizeGiB: number) => project.program([
        { type: "Volume", name: "exported", args: { sizeGiB } },
        { type: "Attachment", name: "over-nbd", args: { volumeId: "@exported.volumeId", protocol: "nbd" } },
      ]);
      program(1);
      project.up();
      const outputs = project.stateResources()["over-nbd"].outputs;
      const info = outputs.connectionInfo as { driver_volume_type: string; data: { uri: string; export_name: string; port: number; address_source: string } };
      assert.equal(info.driver_volume_type, "nbd");
      assert.equal(info.data.port, port);
      assert.equal(info.data.address_source, "server");
      assert.ok(String(outputs.libvirtXml).includes(`<host name='127.0.0.1' port='${port}'/>`), String(outputs.libvirtXml));
      await until(() => sh("nbdinfo", ["--size", info.data.uri]).code === 0, "the daemon to export it");
      assert.equal(sh("nbdinfo", ["--size", info.data.uri]).out.trim(), String(1024 ** 3));
      program(2);
      project.up();
      const expansion = project.stateResources()["exported"].outputs.expansion as { node_expansion_required: boolean; sizeBytes: number; connections: Array<{ protocol: string; consumerAction: string }> };
      assert.equal(expansion.node_expansion_required, true);
      assert.equal(expansion.sizeBytes, 2 * 1024 ** 3);
      assert.deepEqual(expansion.connections.map((c) => [c.protocol, c.consumerAction]), [["nbd", "reconnect"]]);
      assert.equal(sh("nbdinfo", ["--size", info.data.uri]).out.trim(), String(2 * 1024 ** 3), "a new connection gets the new size");
      project.ok(["destroy", "--yes"]);
      await until(() => sh("nbdinfo", ["--size", info.data.uri]).code !== 0, "the export to go with the attachment");
    } finally {
      removeDir(project.dir);
    }
  });
});
