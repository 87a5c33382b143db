// `kindling nbd serve` with the real NBD clients users have: nbdinfo, nbdcopy, qemu-img,
// qemu-io, fio's nbd engine and nbdsh (libnbd's Python shell).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { MiB } from "../provider/util/sizes";
import { kindling } from "./helpers/cli";
import { Daemon, freePort } from "./helpers/daemon";
import { removeDir, tempDir } from "./helpers/env";

function run(command: string, args: string[], input?: string) {
  // nbdsh is Python: Debian's python3 has the nbd module, a pyenv one may not.
  const r = spawnSync(command, args, { encoding: "utf8", input, env: { ...process.env, PATH: `/usr/bin:${process.env.PATH}` }, maxBuffer: 64 * MiB });
  return { code: r.status ?? -1, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

function ok(command: string, args: string[], input?: string) {
  const r = run(command, args, input);
  assert.equal(r.code, 0, `${command} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

describe("real NBD clients against kindling nbd serve", () => {
  let dir: string;
  let config: string;
  let daemon: Daemon;
  let volume: { id: string; location: string };
  let snapshot: { id: string };
  const cli = (...args: string[]) => {
    const r = kindling(["--config", config, "--json", ...args]);
    assert.equal(r.code, 0, r.stderr);
    return r.json();
  };

  before(async () => {
    dir = tempDir();
    config = join(dir, "kindling.json");
    writeFileSync(config, JSON.stringify({ backends: { b: { driver: "file", path: join(dir, "volumes") } } }));
    volume = cli("volume", "create", "disk", "--size", "1");
    cli("connect", "disk", "--protocol", "nbd");
    snapshot = cli("snapshot", "create", "disk", "empty");
    cli("connect", "empty", "--protocol", "nbd");
    daemon = await Daemon.start(config, await freePort());
  });
  after(async () => {
    await daemon?.stop();
    removeDir(dir);
  });

  const uri = (name: string) => `${daemon.uri}/${name}`;

  test("nbdinfo: list, JSON, capabilities, read-only snapshots", () => {
    const list = ok("nbdinfo", ["--list", daemon.uri]);
    for (const name of [volume.id, "disk", snapshot.id, "empty"]) assert.ok(list.includes(`export="${name}"`), name);
    const json = JSON.parse(ok("nbdinfo", ["--json", uri("disk")]));
    assert.equal(json.protocol, "newstyle-fixed");
    assert.equal(json.structured, true);
    assert.equal(json.exports[0]["export-size"], 1024 * MiB);
    assert.ok(json.exports[0].contexts.includes("base:allocation"));
    for (const can of ["flush", "trim", "zero", "fua", "multi-conn", "cache", "df", "fast-zero"]) {
      assert.equal(run("nbdinfo", ["--can", can, uri("disk")]).code, 0, `can ${can}`);
    }
    assert.equal(run("nbdinfo", ["--is", "read-only", uri("empty")]).code, 0, "snapshots are read-only");
    assert.notEqual(run("nbdinfo", ["--is", "read-only", uri("disk")]).code, 0);
    assert.equal(run("nbdinfo", ["--size", uri("no-such-export")]).code === 0, false);
  });

  test("nbdcopy both ways; qemu-img compare, info, map, convert", () => {
    const source = join(dir, "source.img");
    writeFileSync(source, randomBytes(32 * MiB));
    truncateSync(source, 1024 * MiB);
    ok("nbdcopy", ["--flush", source, uri("disk")]);
    assert.match(ok("qemu-img", ["compare", "-f", "raw", "-F", "raw", source, uri("disk")]), /Images are identical/);
    const back = join(dir, "back.img");
    ok("nbdcopy", [uri("disk"), back]);
    assert.ok(readFileSync(back).subarray(0, 32 * MiB).equals(readFileSync(source).subarray(0, 32 * MiB)));
    assert.match(ok("qemu-img", ["info", uri("disk")]), /virtual size: 1 GiB \(1073741824 bytes\)/);
    const map = JSON.parse(ok("qemu-img", ["map", "--output=json", "-f", "raw", uri("disk")]));
    assert.deepEqual([map[0].start, map[0].length, map[0].data], [0, 32 * MiB, true]);
    assert.equal(map.at(-1).data, false, "the rest is a hole");
    ok("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", uri("disk"), join(dir, "out.qcow2")]);
    assert.match(ok("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", join(dir, "out.qcow2"), source]), /identical/);
    const mapped = ok("nbdinfo", ["--map", uri("disk")]);
    assert.match(mapped, /^\s+0\s+33554432\s+0\s+data/m);
    // The volume file holds exactly what the client wrote.
    assert.ok(readFileSync(volume.location).subarray(0, MiB).equals(readFileSync(source).subarray(0, MiB)));
    // The snapshot is of the empty volume.
    assert.match(ok("nbdinfo", ["--map", uri("empty")]), /hole,zero/);
  });

  test("qemu-io pattern writes and reads; a wrong pattern fails", () => {
    ok("qemu-io", ["-f", "raw", "-c", "write -P 0xab 64M 1M", "-c", "read -P 0xab 64M 1M", "-c", "read -P 0 100M 4k", "-c", "flush", uri("disk")]);
    const wrong = run("qemu-io", ["-f", "raw", "-c", "read -P 0xff 64M 512", uri("disk")]);
    assert.match(wrong.stdout + wrong.stderr, /Pattern verification failed/);
  });

  test("fio's nbd engine: a short verified random-write run", () => {
    const out = ok("fio", ["--name=verify", "--ioengine=nbd", `--uri=${uri("disk")}`, "--rw=randwrite", "--bs=4k", "--size=16M", "--offset=128M", "--iodepth=16", "--verify=crc32c", "--verify_fatal=1"]);
    assert.match(out, /err= 0/);
  });

  test("nbdsh: every command, and errors the server must answer itself", () => {
    const script = `
h.pwrite(b"\\x42" * 4096, 4096)
assert h.pread(4096, 4096) == b"\\x42" * 4096
h.zero(1 << 20, 1 << 20)
h.trim(1 << 20, 2 << 20)
h.flush()
h.cache(4096, 0)
seen = []
h.block_status(4 << 20, 0, lambda m, o, e, err: seen.append((m, e)))
assert seen[0][0] == "base:allocation", seen
h.set_strict_mode(0)
errors = []
for f in (lambda: h.pread(512, h.get_size()), lambda: h.pwrite(b"x" * 512, h.get_size()), lambda: h.pread(512, 0, 0x4000)):
    try:
        f()
        errors.append(None)
    except nbd.Error as e:
        errors.append(e.errno)
print(errors)
assert h.pread(4096, 4096) == b"\\x42" * 4096
`;
    const out = ok("nbdsh", ["--base-allocation", "-u", uri("disk"), "-c", script]);
    assert.match(out, /\['EINVAL', 'ENOSPC', 'EINVAL'\]/);
  });
});
