// Object volumes through `kindling nbd serve` with the real NBD clients users have (nbdinfo,
// nbdcopy, qemu-img, fio), and a filesystem made on a 64 GiB volume through local attach
// (nbdfuse and a loop device): TRIM must be map changes, not a storm of requests. What the
// store holds is counted from the store's side.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Backend } from "../provider/library";
import { MiB, GiB } from "../provider/util/sizes";
import type { ObjectStore } from "../provider/drivers/object/store";
import { kindling } from "./helpers/cli";
import { Daemon, freePort } from "./helpers/daemon";
import { lsblkSize, needsRoot, removeDir } from "./helpers/env";
import { keysUnder, objectBackendConfig, startObjectStores, STORE_KINDS, STORE_LABEL, volumeKeys, type ObjectStores } from "./helpers/object-backends";
import { objectStoresMissing } from "./helpers/objectstores";

const missing = objectStoresMissing();
let stores: ObjectStores | undefined;
before(async () => {
  stores = await startObjectStores();
});
after(() => stores?.stop());

function run(command: string, args: string[]) {
  // nbdsh is Python: Debian's python3 has the nbd module, a pyenv one may not.
  const r = spawnSync(command, args, { encoding: "utf8", maxBuffer: 64 * MiB, env: { ...process.env, PATH: `/usr/bin:${process.env.PATH}` } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}
function ok(command: string, args: string[]): string {
  const r = run(command, args);
  assert.equal(r.code, 0, `${command} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

for (const kind of STORE_KINDS) {
  describe(`object volumes over NBD on ${STORE_LABEL[kind]}`, { skip: missing }, () => {
    let dir: string;
    let config: string;
    let store: ObjectStore;
    let daemon: Daemon;
    let disk: { id: string };
    let big: { id: string };
    const cli = (...args: string[]) => {
      const r = kindling(["--config", config, "--json", ...args]);
      assert.equal(r.code, 0, r.stderr);
      return r.json();
    };
    const uri = (name: string) => `${daemon.uri}/${name}`;

    before(async () => {
      assert.ok(stores);
      const made = await objectBackendConfig(stores, kind);
      dir = made.dir;
      store = made.store;
      config = join(dir, "kindling.json");
      writeFileSync(config, JSON.stringify({ backends: { objects: { ...made.config, persistence: { storage: "sqlite", path: join(dir, "records.db") } } } }));
      disk = cli("volume", "create", "disk", "--size", "1");
      cli("connect", "disk", "--protocol", "nbd");
      big = cli("volume", "create", "big", "--size", "64");
      const port = await freePort();
      process.env.KINDLING_NBD_ADDRESS = `127.0.0.1:${port}`;
      daemon = await Daemon.start(config, port);
    });
    after(async () => {
      await daemon?.stop();
      delete process.env.KINDLING_NBD_ADDRESS;
      removeDir(dir);
    });

    test("nbdinfo: size, capabilities, multi-conn", () => {
      const json = JSON.parse(ok("nbdinfo", ["--json", uri("disk")]));
      assert.equal(json.exports[0]["export-size"], 1024 * MiB);
      for (const can of ["flush", "trim", "zero", "fua", "multi-conn"]) assert.equal(run("nbdinfo", ["--can", can, uri("disk")]).code, 0, `can ${can}`);
    });

    test("nbdcopy both ways, qemu-img compare, fio with verify, and the objects it took", () => {
      const source = join(dir, "source.img");
      writeFileSync(source, randomBytes(96 * MiB));
      truncateSync(source, 1024 * MiB);
      ok("nbdcopy", ["--flush", source, uri("disk")]);
      assert.match(ok("qemu-img", ["compare", "-f", "raw", "-F", "raw", source, uri("disk")]), /Images are identical/);
      const back = join(dir, "back.img");
      ok("nbdcopy", [uri("disk"), back]);
      assert.ok(readFileSync(back).equals(readFileSync(source)));
      // The map knows the copy's holes: only what was written is data.
      const map = ok("nbdinfo", ["--map", uri("disk")]);
      assert.match(map, /^\s*0\s+100663296\s+0\s+data$/m, map);
      assert.match(map, /100663296\s+973078528\s+3\s+hole,zero/, map);
      const fio = run("fio", ["--name=verify", "--ioengine=nbd", `--uri=${uri("disk")}`, "--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=64m", "--offset=128m",
        "--verify=crc32c", "--verify_fatal=1", "--do_verify=1", "--output-format=json"]);
      assert.equal(fio.code, 0, fio.stderr + fio.stdout.slice(-2000));
      const job = JSON.parse(fio.stdout.slice(fio.stdout.indexOf("{"))).jobs[0];
      assert.equal(job.error, 0);
      assert.ok(job.write.io_bytes >= 64 * MiB && job.read.io_bytes >= 64 * MiB, "fio wrote and verified 64 MiB");
    });

    test("download (sparse, with its checksum) and lock by hand, through the command", async () => {
      // What the export serves now (the copy, then fio's writes over part of it).
      const served = join(dir, "served.img");
      ok("nbdcopy", [uri("disk"), served]);
      const source = readFileSync(served);
      const file = join(dir, "downloaded.img");
      cli("snapshot", "create", "disk", "for-download");
      const got = cli("volume", "download", "disk", file, "--snapshot", "for-download");
      assert.equal(got.bytes, 1024 * MiB);
      assert.equal(got.sha256, createHash("sha256").update(source).digest("hex"));
      assert.ok(readFileSync(file).equals(source));
      assert.ok(statSync(file).blocks * 512 < 200 * MiB, "the holes stay holes");
      // `disk` is exported read-write (the server holds its writer lock); `big` is not.
      cli("volume", "lock", "big");
      // The store's own lease holds it too: a library user elsewhere is refused by the store.
      const backend = await Backend.open({ name: "objects", ...JSON.parse(readFileSync(config, "utf8")).backends.objects } as never);
      try {
        await assert.rejects((await backend.getVolume(big.id)).open(), /held by a lock held by hand|locked by hand/);
        const locked = kindling(["--config", config, "volume", "lock", "big"]);
        assert.notEqual(locked.code, 0, "a second lock is refused");
        cli("volume", "unlock", "big");
        const d = await (await backend.getVolume(big.id)).open();
        await d.close();
      } finally {
        await backend.close();
      }
    });

    test("mkfs.ext4 on a 64 GiB volume through nbdfuse and a loop device: discard is map changes", async (t) => {
      if (needsRoot(t)) return; // loop devices and FUSE mounts need root
      const before = (await volumeKeys(store, big.id)).length;
      const backend = await Backend.open({ name: "objects", ...JSON.parse(readFileSync(config, "utf8")).backends.objects } as never);
      try {
        const volume = await backend.getVolume(big.id);
        const connection = await volume.attach();
        const device = connection.devicePath as string;
        try {
          assert.equal(lsblkSize(device), 64 * GiB);
          ok("mkfs.ext4", ["-q", "-F", "-E", "discard,lazy_itable_init=1,lazy_journal_init=1", device]);
          ok("blockdev", ["--flushbufs", device]);
          const fsck = run("e2fsck", ["-n", "-f", device]);
          assert.equal(fsck.code, 0, fsck.stdout + fsck.stderr);
        } finally {
          await volume.detach();
        }
        const after = (await volumeKeys(store, big.id)).length;
        // A full-device discard over 64 GiB becomes a few records, and ext4's metadata a few more.
        assert.ok(after - before < 200, `mkfs wrote ${after - before} objects`);
        const state = JSON.parse(ok("nbdinfo", ["--json", uri("disk")]));
        assert.ok(state);
        const inspected = await volume.inspect();
        assert.ok((inspected.allocatedBytes ?? 0) < 2 * GiB, `allocated ${inspected.allocatedBytes}`);
      } finally {
        await backend.close();
      }
    });

    test("an unwritten clone's block status comes from its parent; trimmed blocks are holes", async () => {
      cli("volume", "clone", "disk", "copy");
      cli("connect", "copy", "--protocol", "nbd");
      await new Promise((r) => setTimeout(r, 1500)); // the daemon picks the new export up
      const map = ok("nbdinfo", ["--map", uri("copy")]);
      assert.match(map, /^\s*0\s+100663296\s+0\s+data$/m, map);
      ok("nbdsh", ["-u", uri("copy"), "-c", "h.trim(1048576, 1048576)", "-c", "h.zero(1048576, 4194304, nbd.CMD_FLAG_NO_HOLE)", "-c", "h.flush()"]);
      const after = ok("nbdinfo", ["--map", uri("copy")]);
      assert.match(after, /^\s*0\s+1048576\s+0\s+data$/m, after);
      assert.match(after, /^\s*1048576\s+1048576\s+3\s+hole,zero$/m, after);
      assert.match(after, /^\s*4194304\s+1048576\s+2\s+zero$/m, after);
      const zeros = ok("nbdsh", ["-u", uri("copy"), "-c", "import sys; sys.stdout.write(str(h.pread(1048576, 1048576) == bytes(1048576) and h.pread(1048576, 4194304) == bytes(1048576)))"]);
      assert.equal(zeros.trim(), "True");
      assert.ok((await keysUnder(store, "kindling/v1/vol/")).length > 0);
    });
  });
}
