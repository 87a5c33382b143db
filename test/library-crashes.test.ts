// `kill -9` in the middle of an operation, then the next operation: it finds the dead holder's
// lease, repairs from what the storage holds, and goes on. Each case is a defect it once was
// (D5 kill mid-clone, D6 kill mid-extend, D8 kill mid-attach).
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { Backend } from "../provider/library";
import { GiB } from "../provider/util/sizes";
import { allocatedBytes, needsRoot, removeDir, tempDir } from "./helpers/env";
import { KINDLING, kindling } from "./helpers/cli";
import { detachLoopsUnder, loopDevices, recordsVersusStorage } from "./helpers/consistency";
import type { LoopFilesystem } from "./helpers/filesystems";
import { bigVolumeBackend } from "./helpers/big-volume";
import { slowLosetup } from "./helpers/slow-losetup";

function start(configFile: string, args: string[], env: Record<string, string> = {}): { child: ChildProcess; exited: Promise<number | null> } {
  const child = spawn(KINDLING, ["--config", configFile, ...args], { stdio: "ignore", env: { ...process.env, ...env } });
  return { child, exited: new Promise((done) => child.on("exit", (code) => done(code))) };
}

/** Polls until `check` holds (bounded: the operation under test may have finished already). */
async function until(check: () => Promise<boolean>, tries = 1000): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return false;
}

function loopsOver(file: string): string[] {
  return [...loopDevices()].filter(([, back]) => back.replace(/ \(deleted\)$/, "") === file).map(([device]) => device);
}

describe("kill -9 mid-clone (defect D5)", () => {
  let fs: LoopFilesystem | undefined;
  after(() => fs?.remove());

  test("the half-made clone is rolled back by the next operation; nothing is made from it", async (t) => {
    if (needsRoot(t)) return;
    const setup = await bigVolumeBackend(3072);
    fs = setup.fs;
    const { pool, configFile, k, backend } = setup;
    try {
      const clone = start(configFile, ["volume", "clone", "big", "bigc"]);
      const seen = await until(async () => (await backend.volumes()).some((v) => v.name === "bigc" && v.status === "creating"));
      clone.child.kill("SIGKILL");
      await clone.exited;
      assert.ok(seen, "the clone was caught while creating (a 1 GiB copy outlasts the poll)");
      const half = await backend.getVolume("bigc");
      assert.equal(half.status, "creating");
      assert.equal(half.busy?.stale, true, "its lease names a process that is gone");
      const listed = k(["--json", "volume", "list"]).json<Array<{ name: string; lease?: { operation: string } }>>();
      assert.equal(listed.find((v) => v.name === "bigc")?.lease?.operation, "create", "list shows what it was doing");

      const snap = k(["snapshot", "create", "bigc", "bigc-snap"]);
      assert.equal(snap.code, 3, `refused as not found once rolled back: ${snap.stderr}`);
      assert.match(snap.stderr, /bigc/);
      assert.equal(k(["volume", "clone", "bigc", "bigcc"]).code, 3);
      assert.equal(existsSync(half.location ?? join(pool, `volume-${half.id}`)), false, "the partial file went with the rollback");
      assert.deepEqual(await recordsVersusStorage(backend, pool), []);
    } finally {
      await backend.close();
    }
  });
});

describe("kill -9 mid-extend with preallocation=full (defect D6)", () => {
  const dir = tempDir();
  after(() => removeDir(dir));

  for (const next of ["extend again", "connect"] as const) {
    test(`the next operation (${next}) finishes the extend and its preallocation`, async () => {
      const pool = join(dir, next.replace(" ", "-"));
      const configFile = join(dir, `${next.replace(" ", "-")}.json`);
      writeFileSync(configFile, JSON.stringify({ backends: { local: { driver: "file", path: pool } } }));
      const k = (args: string[]) => kindling(["--config", configFile, ...args]);
      assert.equal(k(["volume", "create", "ex", "--size", "1", "--spec", "preallocation=full"]).code, 0);
      const backend = await Backend.open({ name: "local", driver: "file", path: pool });
      try {
        const extend = start(configFile, ["volume", "extend", "ex", "--size", "4"]);
        const seen = await until(async () => (await backend.getVolume("ex")).status === "extending");
        extend.child.kill("SIGKILL");
        await extend.exited;
        assert.ok(seen, "the extend was caught while extending (3 GiB of zeroes outlast the poll)");
        const stuck = await backend.getVolume("ex");
        assert.equal(stuck.status, "extending");
        assert.equal(stuck.busy?.stale, true);
        const result = next === "extend again" ? k(["volume", "extend", "ex", "--size", "4"]) : k(["connect", "ex", "--protocol", "local"]);
        assert.equal(result.code, 0, result.stderr);
        const volume = await backend.getVolume("ex");
        assert.equal(volume.sizeGiB, 4);
        assert.equal(volume.status, next === "connect" ? "in-use" : "available", "back to a usable status (the defect kept it extending)");
        assert.ok(allocatedBytes(volume.location as string) >= 4 * GiB, "thick provisioning completed (the defect left 1.8 of 6 GiB)");
        assert.deepEqual(await recordsVersusStorage(backend, pool), []);
      } finally {
        await backend.close();
      }
    });
  }
});

describe("kill -9 between losetup and recording the device (defect D8)", () => {
  const dir = tempDir();
  after(() => {
    detachLoopsUnder(dir);
    removeDir(dir);
  });


  for (const next of ["disconnect", "attach"] as const) {
    test(`the leaked device is released by the next ${next}`, async (t) => {
      if (needsRoot(t)) return;
      const pool = join(dir, next);
      const configFile = join(dir, `${next}.json`);
      writeFileSync(configFile, JSON.stringify({ backends: { local: { driver: "file", path: pool } } }));
      const k = (args: string[]) => kindling(["--config", configFile, ...args]);
      assert.equal(k(["volume", "create", "n6", "--size", "1"]).code, 0);
      const backend = await Backend.open({ name: "local", driver: "file", path: pool });
      try {
        const file = (await backend.getVolume("n6")).location as string;
        const attach = start(configFile, ["attach", "n6"], { PATH: `${slowLosetup(dir)}:${process.env.PATH}` });
        const made = await until(async () => loopsOver(file).length > 0);
        attach.child.kill("SIGKILL");
        await attach.exited;
        assert.ok(made, "losetup made the device before the kill");
        const [pending] = await backend.connections();
        assert.ok(pending, "the connection was recorded before the device was made");
        assert.equal(pending.devicePath, undefined);
        assert.equal(pending.busy?.operation, "attach");

        if (next === "disconnect") {
          assert.equal(k(["disconnect", "n6"]).code, 0);
          assert.deepEqual(loopsOver(file), [], "disconnect released the device no record named");
          const deleted = k(["volume", "delete", "n6"]);
          assert.equal(deleted.code, 0, deleted.stderr);
          assert.deepEqual(loopsOver(file), []);
        } else {
          const again = k(["attach", "n6"]);
          assert.equal(again.code, 0, again.stderr);
          assert.deepEqual(loopsOver(file), [again.stdout.trim()], "exactly one device, the one recorded");
          assert.equal((await backend.connections()).length, 1);
          assert.deepEqual(await recordsVersusStorage(backend, pool), []);
          assert.equal(k(["detach", "n6"]).code, 0);
          assert.deepEqual(loopsOver(file), []);
        }
        assert.deepEqual(await recordsVersusStorage(backend, pool), []);
      } finally {
        await backend.close();
      }
    });
  }

  test("a refused delete names the command that clears the connection", async () => {
    const pool = join(dir, "hint");
    const configFile = join(dir, "hint.json");
    writeFileSync(configFile, JSON.stringify({ backends: { local: { driver: "file", path: pool } } }));
    const k = (args: string[]) => kindling(["--config", configFile, ...args]);
    assert.equal(k(["volume", "create", "shared", "--size", "1"]).code, 0);
    assert.equal(k(["connect", "shared", "--protocol", "local"]).code, 0);
    const refused = k(["volume", "delete", "shared"]);
    assert.equal(refused.code, 4);
    const hinted = /`kindling ([a-z]+) shared`/.exec(refused.stderr);
    assert.ok(hinted, refused.stderr);
    assert.equal(k([hinted[1], "shared"]).code, 0, "the command the hint names works");
    assert.equal(k(["volume", "delete", "shared"]).code, 0);
  });
});
