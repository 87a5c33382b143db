// The NBD daemon sends nothing but a volume's bytes (D1), and an export whose connection is
// removed, or whose writer lock is lost, ends its clients before its lock and claim go (D7).
// Real `kindling nbd serve` processes, real libnbd clients, real records.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { closeSync, openSync, readSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, describe, test } from "node:test";
import { KINDLING, kindling } from "./helpers/cli";
import { Daemon, freePort } from "./helpers/daemon";
import { removeDir, tempDir } from "./helpers/env";
import { Backend } from "../provider/library";
import { liveClaims, waitForClaimRelease, writerLockKey } from "../provider/library/export-claims";
import type { Persistence } from "../provider/persistence";

const PYTHON = "/usr/bin/python3"; // the one with libnbd's `nbd` module

function python(script: string) {
  const r = spawnSync(PYTHON, ["-c", script], { encoding: "utf8" });
  return { code: r.status ?? -1, out: r.stdout ?? "", err: r.stderr ?? "" };
}

function sh(command: string, args: string[]) {
  const r = spawnSync(command, args, { encoding: "utf8", env: { ...process.env, PATH: `/usr/bin:${process.env.PATH}` } });
  return { code: r.status ?? -1, out: (r.stdout ?? "") + (r.stderr ?? "") };
}

async function until(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await check()) return;
    await sleep(100);
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** The server's end of established client connections on `port`. */
function serverSockets(port: number): number {
  return sh("ss", ["-Htn", "state", "established", `( sport = :${port} )`]).out.split("\n").filter((l) => l.trim()).length;
}

/** pino lines of a daemon's log whose message matches. */
function logLines(d: Daemon, msg: RegExp): Array<{ level: number; msg: string; holder?: string }> {
  return d.log().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)).filter((l) => msg.test(l.msg));
}

/**
 * A client that writes 4 KiB blocks one after another (block i filled with byte i % 251 + 1)
 * until its connection fails, then tries one more write and reports.
 */
function writer(uri: string) {
  const script = `
import json, time, nbd
h = nbd.NBD()
h.connect_uri(${JSON.stringify(uri)})
acked, err, deadline = 0, None, time.time() + 60
try:
    while acked < (1 << 18) and time.time() < deadline:
        h.pwrite(bytes([acked % 251 + 1]) * 4096, acked * 4096)
        acked += 1
        if acked == 64:
            print("started", flush=True)
except nbd.Error as e:
    err = str(e)
further = "acked"
try:
    h.pwrite(b"\\xff" * 4096, 0)
except nbd.Error as e:
    further = "failed"
print(json.dumps({"acked": acked, "err": err, "further": further}), flush=True)
`;
  const child = spawn(PYTHON, ["-c", script], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let done = false;
  void exited.then(() => (done = true));
  return {
    started: () => until(() => out.includes("started") || done, "the client to start writing").then(() => assert.ok(out.includes("started"), out)),
    done: () => done,
    result: async (): Promise<{ acked: number; err: string | null; further: string }> => {
      await exited;
      return JSON.parse(out.trim().split("\n").at(-1) as string);
    },
    kill: () => child.kill("SIGKILL"),
  };
}

/** Every block the writer saw acknowledged holds what it wrote. */
function assertAckedOnDisk(file: string, acked: number): void {
  const fd = openSync(file, "r");
  try {
    const block = Buffer.alloc(4096);
    for (let i = 0; i < acked; i++) {
      readSync(fd, block, 0, 4096, i * 4096);
      if (!block.equals(Buffer.alloc(4096, (i % 251) + 1))) assert.fail(`block ${i} of ${acked} acknowledged writes is not on disk`);
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Watches the release of an export after its end was asked for: at every look the records are
 * read first and the sockets second, so a claim or lock seen gone while a client socket is still
 * open means it went before the socket closed.
 */
async function watchRelease(opts: { port: number; persistence: Persistence; connectionId: string; volumeId: string; lockIsOurs: boolean; over: () => boolean }): Promise<void> {
  const violations: string[] = [];
  for (let i = 0; i < 1500; i++) {
    const claims = (await opts.persistence.getKeyValues()).filter((kv) => kv.key.startsWith(`nbd/export/${opts.connectionId}/`)).length;
    const locked = (await opts.persistence.getKeyValues(writerLockKey(opts.volumeId))).length > 0;
    const open = serverSockets(opts.port);
    if ((claims === 0 || (opts.lockIsOurs && !locked)) && open > 0) violations.push(`claims ${claims}, lock ${locked}, ${open} client socket(s) open`);
    if (claims === 0 && (!opts.lockIsOurs || !locked) && open === 0 && opts.over()) {
      assert.deepEqual(violations, [], "the claim and the lock go only after the client's socket closed");
      return;
    }
    await sleep(20);
  }
  assert.fail("the export was not released");
}

describe("NBD safety", () => {
  const dirs: string[] = [];
  const daemons: Daemon[] = [];
  const backends: Backend[] = [];

  /** A backend of its own for each test, so servers of one test never serve another's volumes. */
  const setup = async () => {
    const dir = tempDir();
    dirs.push(dir);
    const config = join(dir, "kindling.json");
    const path = join(dir, "volumes");
    writeFileSync(config, JSON.stringify({ backends: { b: { driver: "file", path } } }));
    const cli = (...args: string[]) => {
      const r = kindling(["--config", config, "--json", ...args]);
      assert.equal(r.code, 0, r.stderr);
      return r.json();
    };
    const start = async (env: Record<string, string> = {}) => {
      const d = await Daemon.start(config, await freePort(), { KINDLING_NBD_LOCK_STALE_SECONDS: "3", ...env });
      daemons.push(d);
      return d;
    };
    const library = async () => {
      const backend = await Backend.open({ name: "b", driver: "file", path });
      backends.push(backend);
      return backend;
    };
    return { config, cli, start, library };
  };
  const exportsOf = (d: Daemon) => sh("nbdinfo", ["--list", d.uri]).out;

  after(async () => {
    for (const d of daemons) await d.stop("SIGKILL");
    for (const b of backends) await b.close();
    for (const dir of dirs) removeDir(dir);
  });

  for (const structured of [false, true]) {
    test(`D1: reads past the end of a file shortened behind the server's back are zeroes, never another volume's data (${structured ? "structured" : "simple"} replies)`, async () => {
      const { cli, start } = await setup();
      const x = cli("volume", "create", "x", "--size", "1");
      cli("volume", "create", "y", "--size", "1");
      cli("connect", "x", "--protocol", "nbd");
      cli("connect", "y", "--protocol", "nbd");
      const d = await start();
      // x is connected (told 1 GiB), then its file shrinks to 1 MiB; y's client writes a marker
      // while x is read, at many sizes, where x's file has no bytes any more.
      const r = python(`
import json, os, nbd
x = nbd.NBD()
x.set_request_structured_replies(${structured ? "True" : "False"})
x.connect_uri(${JSON.stringify(`${d.uri}/x`)})
assert x.get_structured_replies_negotiated() == ${structured ? "True" : "False"}
assert x.get_size() == 1 << 30
os.truncate(${JSON.stringify(x.location)}, 1 << 20)
y = nbd.NBD()
y.set_request_structured_replies(${structured ? "True" : "False"})
y.connect_uri(${JSON.stringify(`${d.uri}/y`)})
marker = b"TENANT-Y-PRIVATE-DATA-" * 3000
sizes = [512, 1024, 2048, 3000, 4096, 8192, 65536]
reads = nonzero = leaked = errors = 0
for i in range(300):
    n = sizes[i % len(sizes)]
    y.pwrite(marker[:n], (i % 64) * 65536)
    assert y.pread(n, (i % 64) * 65536) == marker[:n]
    try:
        data = x.pread(n, (2 << 20) + i * 65536)
    except nbd.Error:
        errors += 1
        continue
    reads += 1
    if data.count(0) != len(data):
        nonzero += 1
    if b"TENANT" in data:
        leaked += 1
print(json.dumps({"reads": reads, "nonzero": nonzero, "leaked": leaked, "errors": errors}))
`);
      assert.equal(r.code, 0, r.err);
      const counts = JSON.parse(r.out);
      assert.equal(counts.reads + counts.errors, 300);
      assert.equal(counts.leaked, 0, `reads of x that held volume y's data: ${counts.leaked}`);
      assert.equal(counts.nonzero, 0, `reads of x past its file's end with non-zero bytes: ${counts.nonzero}`);
      await d.stop();
    });
  }

  for (const how of ["kindling disconnect", "Connection.disconnect()"] as const) {
    test(`D7: ${how} closes the export's client before its claim and writer lock go; what was acknowledged is on disk`, async () => {
      const { config, cli, start, library } = await setup();
      const volume = cli("volume", "create", "dv", "--size", "1");
      const connection = cli("connect", "dv", "--protocol", "nbd");
      const d = await start();
      const backend = await library();
      const client = writer(`${d.uri}/dv`);
      try {
        await client.started();
        const [claim] = await liveClaims(backend.persistence, { connectionId: connection.id });
        assert.equal(claim?.volumeId, volume.id, "the server claims the export it serves");
        assert.equal(claim.mode, "rw");
        assert.equal(claim.owner.pid, d.child.pid);
        assert.equal((await backend.persistence.getKeyValues(writerLockKey(volume.id))).length, 1, "and holds its writer lock");

        let disconnected: Promise<unknown>;
        if (how === "kindling disconnect") {
          const child = spawn(KINDLING, ["--config", config, "disconnect", "dv"], { stdio: "ignore" });
          disconnected = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
        } else {
          const [handle] = (await backend.connections()).filter((c) => c.id === connection.id);
          disconnected = handle.disconnect().then(() => 0);
        }
        await watchRelease({ port: d.port, persistence: backend.persistence, connectionId: connection.id, volumeId: volume.id, lockIsOurs: true, over: client.done });
        assert.equal(await disconnected, 0);
        assert.equal(await waitForClaimRelease(backend.persistence, connection.id, 10_000), true);

        const result = await client.result();
        assert.ok(result.err, `the client's writes failed once its export was removed (${JSON.stringify(result)})`);
        assert.equal(result.further, "failed", "a further write fails");
        assertAckedOnDisk(volume.location, result.acked);
        assert.ok(!exportsOf(d).includes('export="dv"'));
        // With no client and no claim left, the volume can go.
        cli("volume", "delete", "dv");
      } finally {
        client.kill();
        await d.stop();
      }
    });
  }

  test("a client gets the size the records hold when it connects: an extend shows to new clients, never a size not yet recorded", async () => {
    const { cli, start } = await setup();
    cli("volume", "create", "grows", "--size", "1");
    cli("connect", "grows", "--protocol", "nbd");
    const d = await start();
    const size = () => {
      const r = python(`
import nbd
h = nbd.NBD()
h.connect_uri(${JSON.stringify(`${d.uri}/grows`)})
print(h.get_size())`);
      assert.equal(r.code, 0, r.err);
      return Number(r.out.trim());
    };
    try {
      assert.equal(size(), 1 << 30);
      cli("volume", "extend", "grows", "--size", "2");
      assert.equal(size(), 2 * 2 ** 30, "a client connecting after the extend sees the new size");
    } finally {
      await d.stop();
    }
  });

  test("D7: while a (stopped) server still serves the export, delete is refused; once the server closes it, delete works", async () => {
    const { config, cli, start } = await setup();
    cli("volume", "create", "held", "--size", "1");
    cli("connect", "held", "--protocol", "nbd");
    const d = await start();
    const client = writer(`${d.uri}/held`);
    try {
      await client.started();
      // A server that cannot act (stopped, overloaded): it still holds the file and its clients.
      d.child.kill("SIGSTOP");
      const disconnected = kindling(["--config", config, "disconnect", "held"]);
      assert.equal(disconnected.code, 0, "the connection record goes");
      const refused = kindling(["--config", config, "volume", "delete", "held"]);
      assert.equal(refused.code, 4, `delete is refused while the export is served: ${refused.stderr}`);
      assert.match(refused.stderr, /still served over NBD by /);
      assert.ok(refused.stderr.includes(String(d.child.pid)), "naming the server");
      d.child.kill("SIGCONT");
      await until(() => client.done(), "the server to close the client");
      // Its claim goes right after the client's socket: then the delete goes through.
      await until(() => kindling(["--config", config, "volume", "delete", "held"]).code === 0, "the delete to go through");
      assert.equal(kindling(["--config", config, "volume", "show", "held"]).code, 3);
    } finally {
      d.child.kill("SIGCONT");
      client.kill();
      await d.stop();
    }
  });

  test("a lost writer lock (taken over by another owner) closes the export's connections; the server takes the lock again once it is free", async () => {
    const { cli, start, library } = await setup();
    const volume = cli("volume", "create", "lost", "--size", "1");
    const connection = cli("connect", "lost", "--protocol", "nbd");
    const d = await start();
    const backend = await library();
    const client = writer(`${d.uri}/lost`);
    try {
      await client.started();
      const key = writerLockKey(volume.id);
      const other = (pid: number) => JSON.stringify({ owner: { host: "another-host", boot: "b00t", pid, start: "1" }, heartbeat: Date.now() + 3_600_000 });
      const taken = other(4242);
      await backend.persistence.setKeyValue({ key, value: taken });
      await watchRelease({ port: d.port, persistence: backend.persistence, connectionId: connection.id, volumeId: volume.id, lockIsOurs: false, over: client.done });
      const result = await client.result();
      assert.ok(result.err, `the client was cut off (${JSON.stringify(result)})`);
      assert.equal(result.further, "failed");
      assertAckedOnDisk(volume.location, result.acked);
      assert.equal((await backend.persistence.getKeyValues(key))[0]?.value, taken, "the new holder's lock is left alone");
      assert.ok(!exportsOf(d).includes('export="lost"'), "not exported while another server holds the lock");
      // The daemon's log line may land just after the client sees its connection cut.
      await until(() => logLines(d, /taken by another server/).length > 0, "the log line saying the lock was taken");
      assert.equal(logLines(d, /taken by another server/).length, 1);

      // Another holder is news, said once more; a free lock is taken again, and said so.
      await backend.persistence.setKeyValue({ key, value: other(4343) });
      await until(() => logLines(d, /exported read-write by another server/).some((l) => l.holder === "another-host:4343"), "the refusal naming the new holder");
      assert.equal(logLines(d, /exported read-write by another server/).length, 1, "the first holder was already reported when the lock was lost");
      await backend.persistence.deleteKeyValue(key);
      await until(() => exportsOf(d).includes('export="lost"'), "the export to come back");
      await until(() => logLines(d, /took the writer lock/).length > 0, "the log line saying the lock was taken again");
      assert.equal(logLines(d, /took the writer lock/).length, 1);
    } finally {
      client.kill();
      await d.stop();
    }
  });

  test("a second server logs once (a warning naming the holder) that it cannot lock a read-write export, and says when it takes it", async () => {
    const { cli, start } = await setup();
    cli("volume", "create", "contested", "--size", "1");
    cli("connect", "contested", "--protocol", "nbd");
    const first = await start();
    const second = await start();
    const refusals = () => logLines(second, /exported read-write by another server/);
    assert.ok(!exportsOf(second).includes('export="contested"'));
    // The daemon writes its log line before it changes its exports, but this process reads the
    // daemon's stderr only between its own steps: the line may be read just after the listing.
    await until(() => refusals().length > 0, "the second server's warning that it cannot lock the export");
    assert.equal(refusals().length, 1);
    // Two more syncs of the second server, each seen by the export it picks up.
    for (const marker of ["m1", "m2"]) {
      cli("volume", "create", marker, "--size", "1");
      cli("connect", marker, "--protocol", "nbd", "--mode", "ro");
      await until(() => exportsOf(second).includes(`export="${marker}"`), `the second server to export ${marker}`);
    }
    const [refusal, ...more] = refusals();
    assert.equal(more.length, 0, "refused once, not at every poll");
    assert.equal(refusal.level, 40, "a warning, not an error");
    assert.equal(refusal.holder, `${hostname()}:${first.child.pid}`);
    await first.stop("SIGKILL");
    await until(() => exportsOf(second).includes('export="contested"'), "the lock to be taken over");
    await until(() => logLines(second, /took the writer lock/).length > 0, "the second server's log line that it took the lock");
    const took = logLines(second, /took the writer lock/);
    assert.equal(took.length, 1);
    assert.equal(took[0].level, 30);
    assert.equal(refusals().length, 1);
    await second.stop();
  });
});
