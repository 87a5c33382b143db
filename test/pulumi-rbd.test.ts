// examples/ceph through the real Pulumi engine against a real single-node Ceph cluster: the
// program a user runs (a copy of it in a temp project with local state), its backend and key
// from stack config, and every effect checked from the Ceph admin's side (`rbd` as
// client.admin), not through kindling. The connection info of the rbd attachment is used by a
// real librbd consumer (qemu-io), and the key is looked for wherever state lands.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, lstatSync, openSync, readdirSync, readFileSync, readSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { GiB } from "../provider/util/sizes";
import { CephCluster, cephMissing } from "./helpers/ceph";
import { deviceSize, needsRoot, removeDir } from "./helpers/env";
import { Project } from "./helpers/pulumi";

interface ImageInfo {
  size: number;
  parent?: { pool: string; image: string; snapshot: string };
}

interface RbdData {
  name: string;
  pool: string;
  image: string;
  monitors: string[];
  auth_username: string;
  key?: string;
}

interface Outputs {
  volume: { id: string; name: string; sizeGiB: number; location: string };
  snapshot: { id: string; volumeSizeGiB: number };
  clone: { id: string; name: string; sizeGiB: number; location: string };
  fromSnapshot: { id: string; name: string; sizeGiB: number; location: string };
  attachment: { id: string; monitors: string[]; image: string; user: string; devicePath?: string };
}

const skip = cephMissing();
const POOL = "volumes";
/** The bad-input stacks get a pool of their own, so "nothing was created" is exact. */
const BAD_POOL = "badinput";

let cluster: CephCluster | undefined;

/** Ceph daemons started from a cluster dir (up.sh exports CEPH_CONF, the daemons inherit it). */
function daemonsOf(dir: string): string[] {
  const r = spawnSync("pgrep", ["-a", "ceph-"], { encoding: "utf8" });
  return (r.stdout ?? "")
    .split("\n")
    .filter(Boolean)
    .filter((line) => {
      try {
        return readFileSync(`/proc/${line.split(" ")[0]}/environ`, "utf8").includes(`CEPH_CONF=${dir}/ceph.conf`);
      } catch {
        return false; // gone meanwhile
      }
    });
}

before(async () => {
  if (!skip) cluster = await CephCluster.start([POOL, BAD_POOL]);
});

after(() => {
  if (!cluster) return;
  const dir = cluster.dir;
  cluster.stop();
  removeDir(dirname(dir));
  assert.deepEqual(daemonsOf(dir), [], "no daemon of this test's cluster is left");
});

function ceph(): CephCluster {
  assert.ok(cluster, "the Ceph cluster is up");
  return cluster;
}

const images = (pool: string) => ceph().rbdJson<string[]>(["ls", pool]).sort();
const imageInfo = (spec: string) => ceph().rbdJson<ImageInfo>(["info", spec]);
const snapNames = (image: string) => ceph().rbdJson<Array<{ name: string }>>(["snap", "ls", image]).map((s) => s.name);

/** Pulumi's mark on a secret value in exported state. */
const SECRET_SIG = ["4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"] as const;

const isSecret = (value: unknown) => (value as Record<string, unknown> | undefined)?.[SECRET_SIG[0]] === SECRET_SIG[1];

/** A secret from `stack export --show-secrets`: `{sig, plaintext: JSON}`. */
function revealed<T>(value: unknown): T {
  assert.ok(isSecret(value), `a secret value: ${JSON.stringify(value)?.slice(0, 200)}`);
  return JSON.parse(String((value as Record<string, unknown>).plaintext)) as T;
}

/**
 * The small regular files under dir, with their contents, for "the key is nowhere in clear"
 * checks. FUSE mounts (`mnt`, where an image shows as a file of gigabytes), special files and
 * files that vanish meanwhile (other processes share /run/kindling) are passed over.
 */
function filesUnder(dir: string): Array<{ path: string; text: string }> {
  const out: Array<{ path: string; text: string }> = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    try {
      const st = lstatSync(path);
      if (st.isDirectory() && name !== "mnt") out.push(...filesUnder(path));
      else if (st.isFile() && st.size < 16 * 1024 * 1024) out.push({ path, text: readFileSync(path, "latin1") });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }
  return out;
}

/**
 * The value once `done` accepts it, or the last one after about ten seconds: for cleanup that a
 * process does as it exits, after the engine has already returned.
 */
function eventually<T>(get: () => T, done: (value: T) => boolean): T {
  let value = get();
  for (let i = 0; i < 100 && !done(value); i++) {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    value = get();
  }
  return value;
}

/** The first bytes of a block device, read through the kernel. */
function readDevice(device: string, length: number): Buffer {
  const fd = openSync(device, "r");
  try {
    const buf = Buffer.alloc(length);
    assert.equal(readSync(fd, buf, 0, length, 0), length);
    return buf;
  } finally {
    closeSync(fd);
  }
}

/** What still serves an image on this host: loop devices over its rbd-fuse file, rbd-fuse, kernel maps. */
function localAttachmentsOf(image: string): string[] {
  const lines = (command: string, args: string[]) => (spawnSync(command, args, { encoding: "utf8" }).stdout ?? "").split("\n").filter((l) => l.includes(image));
  const kernel = existsSync("/sys/bus/rbd/devices")
    ? readdirSync("/sys/bus/rbd/devices").filter((d) => readFileSync(`/sys/bus/rbd/devices/${d}/name`, "utf8").trim() === image).map((d) => `/dev/rbd${d}`)
    : [];
  return [...lines("losetup", ["--list", "--noheadings", "--output", "NAME,BACK-FILE"]), ...lines("pgrep", ["-af", "rbd-fuse"]), ...kernel];
}

/**
 * A librbd consumer (qemu-io) given nothing but the attachment's connection info: monitors,
 * pool, image, user and the key, which goes to it in a file, never on its command line.
 */
function consumer(data: RbdData, commands: string[], readOnly = false): string {
  const keyDir = mkdtempSync(join(tmpdir(), "kindling-rbd-consumer-"));
  try {
    const keyFile = join(keyDir, "key");
    writeFileSync(keyFile, String(data.key), { mode: 0o600 });
    const servers = data.monitors.map((m) => ({ host: m.replace(/:\d+$/, ""), port: /:(\d+)$/.exec(m)?.[1] ?? "6789" }));
    const target = { driver: "rbd", pool: data.pool, image: data.image, user: data.auth_username, server: servers, "key-secret": "k" };
    const args = ["--object", `secret,id=k,file=${keyFile},format=base64`, ...(readOnly ? ["-r"] : []), ...commands.flatMap((c) => ["-c", c]), `json:${JSON.stringify(target)}`];
    const r = spawnSync("qemu-io", args, { encoding: "utf8", timeout: 120_000 });
    assert.equal(r.status, 0, `qemu-io failed: ${r.stdout}\n${r.stderr}`);
    return r.stdout;
  } finally {
    removeDir(keyDir);
  }
}

describe("examples/ceph through the Pulumi engine on a real Ceph cluster", { skip }, () => {
  let project: Project;
  const outputs = () => JSON.parse(project.ok(["stack", "output", "--json", "--show-secrets"]).stdout) as Outputs;
  const spec = (id: string) => `${POOL}/volume-${id}`;
  /** The attachment's connection info as the state holds it, decrypted. */
  const connectionData = () => revealed<{ driver_volume_type: string; data: RbdData }>(project.stateResources({ showSecrets: true })["data-librbd"].outputs.connectionInfo);

  before(() => {
    project = Project.example("ceph");
    // The rbd driver's key files go here instead of /run/kindling, where other runs keep theirs.
    project.env.KINDLING_RUNTIME_DIR = join(project.dir, "runtime");
    project.init();
    // What the README tells a user to set: monitors, user, pool, and the key as a secret.
    project.config("monHost", ceph().monHost);
    project.config("user", "kindling");
    project.config("pool", POOL);
    project.config("key", ceph().key, { secret: true });
  });

  after(() => {
    if (!project) return;
    // Whatever a failed test left behind goes, so the cluster can be stopped cleanly.
    project.run(["destroy", "--yes", "--skip-preview"]);
    removeDir(project.dir);
  });

  test("1. up creates a volume, a snapshot, a clone, a volume from the snapshot and an rbd attachment", () => {
    project.ok(["up", "--yes", "--skip-preview"]);
    const out = outputs();
    const data = spec(out.volume.id);
    assert.deepEqual(images(POOL), [out.volume.id, out.clone.id, out.fromSnapshot.id].map((id) => `volume-${id}`).sort());
    assert.equal(out.volume.location, data);
    assert.equal(imageInfo(data).size, GiB);
    assert.equal(imageInfo(data).parent, undefined, "the volume is an image of its own");

    assert.ok(snapNames(data).includes(`snapshot-${out.snapshot.id}`), `the snapshot is an RBD snapshot of the volume: ${snapNames(data)}`);
    assert.equal(out.snapshot.volumeSizeGiB, 1);

    // Copy-on-write: the clone hangs on a snapshot kindling took of the volume for it, the
    // restored volume on the program's snapshot.
    const clone = imageInfo(spec(out.clone.id));
    assert.deepEqual([clone.parent?.pool, clone.parent?.image, clone.parent?.snapshot], [POOL, `volume-${out.volume.id}`, `clone-${out.clone.id}`]);
    assert.equal(clone.size, GiB);
    const restored = imageInfo(spec(out.fromSnapshot.id));
    assert.deepEqual([restored.parent?.pool, restored.parent?.image, restored.parent?.snapshot], [POOL, `volume-${out.volume.id}`, `snapshot-${out.snapshot.id}`]);
    assert.equal(restored.size, 2 * GiB, "grown past the snapshot's 1 GiB");
    assert.equal(out.fromSnapshot.sizeGiB, 2);

    // The exported attachment says where the image is, and not the key.
    assert.deepEqual(out.attachment.monitors, [ceph().monHost]);
    assert.equal(out.attachment.image, data);
    assert.equal(out.attachment.user, "kindling");
    assert.equal(out.attachment.devicePath, undefined, "attachLocally defaults to false");
    assert.ok(!JSON.stringify(out).includes(ceph().key), "stack outputs carry no key");

    // The state's connection info has what a librbd consumer needs, key included.
    const info = connectionData();
    assert.equal(info.driver_volume_type, "rbd");
    assert.deepEqual(info.data.monitors, [ceph().monHost]);
    assert.equal(info.data.name, data);
    assert.equal(info.data.key, ceph().key);
    // ...and it works: qemu-io reaches the image with it and writes a pattern that the extend
    // must keep.
    assert.match(consumer(info.data, ["write -P 0x5a 0 1M", "read -P 0x5a 0 1M"]), /read 1048576\/1048576 bytes/);
  });

  test("2. raising sizeGiB extends the image in place and keeps its data", () => {
    const before = outputs();
    project.config("sizeGiB", 2);
    const steps = project.previewSteps();
    assert.equal(steps.data, "update");
    assert.ok(!Object.values(steps).includes("replace"), `nothing is replaced: ${JSON.stringify(steps)}`);
    project.ok(["up", "--yes", "--skip-preview"]);
    const out = outputs();
    assert.equal(out.volume.id, before.volume.id, "the same volume");
    assert.equal(out.volume.sizeGiB, 2);
    assert.equal(imageInfo(spec(out.volume.id)).size, 2 * GiB);
    assert.equal(imageInfo(spec(out.clone.id)).size, 2 * GiB, "the clone follows the volume's size");
    assert.ok(imageInfo(spec(out.clone.id)).parent, "still a clone, not a new copy");
    const data = connectionData().data;
    const seen = consumer(data, ["read -P 0x5a 0 1M", "length"], true);
    assert.match(seen, /read 1048576\/1048576 bytes/, "the data written before the extend is still there");
    assert.doesNotMatch(seen, /Pattern verification failed/);
    assert.match(seen, /^2 GiB$/m, "the consumer sees the new size");
  });

  test("3. a hand resize is caught by preview --refresh --expect-no-changes and recorded by refresh", () => {
    const out = outputs();
    // Before the drift, the check passes: a failure after it means the drift was seen.
    project.ok(["preview", "--refresh", "--expect-no-changes"]);
    ceph().admin("rbd", ["resize", "--size", "3G", "--no-progress", spec(out.volume.id)]);
    const check = project.run(["preview", "--refresh", "--expect-no-changes"]);
    assert.notEqual(check.code, 0, "drift is caught");
    project.ok(["refresh", "--yes", "--skip-preview"]);
    const state = project.stateResources().data;
    assert.equal(state.outputs.sizeGiB, 3);
    assert.equal(state.inputs.sizeGiB, 3);
    // The program catches up with reality; the clone grows with it, and then all is quiet.
    project.config("sizeGiB", 3);
    assert.ok([undefined, "same"].includes(project.previewSteps().data), "the program now says what the image is");
    project.ok(["up", "--yes", "--skip-preview"]);
    assert.equal(imageInfo(spec(out.clone.id)).size, 3 * GiB);
    project.ok(["preview", "--refresh", "--expect-no-changes"]);
  });

  test("4. attachLocally (root): the attachment becomes a block device here, which follows an extend", (t) => {
    if (needsRoot(t)) return;
    const before = outputs();
    const image = `volume-${before.volume.id}`;
    project.config("attachLocally", true);
    assert.equal(project.previewSteps()["data-librbd"], "replace", "a local attachment is a new attachment");
    project.ok(["up", "--yes", "--skip-preview"]);
    const out = outputs();
    assert.notEqual(out.attachment.id, before.attachment.id);
    const device = String(out.attachment.devicePath);
    assert.match(device, /^\/dev\/(loop|rbd)\d+$/);
    assert.equal(deviceSize(device), 3 * GiB);
    // What the librbd consumer wrote in test 1, read back through the kernel's block device.
    assert.ok(readDevice(device, 1024 * 1024).every((b) => b === 0x5a), "the device shows the image's data");

    project.config("sizeGiB", 4);
    project.ok(["up", "--yes", "--skip-preview"]);
    assert.equal(imageInfo(spec(out.volume.id)).size, 4 * GiB);
    assert.equal(deviceSize(device), 4 * GiB, "the attached device sees the new size");

    project.config("attachLocally", false);
    project.ok(["up", "--yes", "--skip-preview"]);
    assert.equal(outputs().attachment.devicePath, undefined);
    assert.deepEqual(localAttachmentsOf(image), [], "the device and what served it are gone");
    const fuseRoot = "/run/kindling/rbd-fuse";
    const leftKeys = existsSync(fuseRoot) ? filesUnder(fuseRoot).filter((f) => f.text.includes(ceph().key)) : [];
    assert.deepEqual(leftKeys.map((f) => f.path), [], "no key file of the local attachment is left");
  });

  test("5. the key never reaches state, stack export or engine output in clear", () => {
    const key = ceph().key;
    assert.ok(key.length >= 16, "the cluster gave the client a key");
    // The control: with --show-secrets the key is there, so the searches below can find it.
    const reveals = (args: string[]) => args.includes("export") && args.includes("--show-secrets");
    assert.ok(project.runs.some((r) => reveals(r.args) && r.stdout.includes(key)), "stack export --show-secrets shows the key");
    assert.ok(!project.ok(["stack", "export"]).stdout.includes(key), "stack export without --show-secrets");
    const state = filesUnder(project.state);
    assert.ok(state.some((f) => f.path.endsWith(".json")), `the state files are where we look: ${state.map((f) => f.path)}`);
    for (const file of state) assert.ok(!file.text.includes(key), `${file.path} holds the key in clear`);
    const stackConfig = readFileSync(join(project.dir, "Pulumi.test.yaml"), "utf8");
    assert.match(stackConfig, /kindling-ceph:key:\s*\n\s*secure:/, "the key is an encrypted config value");
    assert.ok(!stackConfig.includes(key));
    // Every resource holds the backend; its key is a secret wherever it is.
    const resources = project.stateResources();
    assert.deepEqual(Object.keys(resources).sort(), ["before-upgrade", "data", "data-copy", "data-librbd", "restored"]);
    for (const [name, r] of Object.entries(resources)) {
      assert.ok(isSecret((r.inputs.backend as Record<string, unknown>).key), `${name}: the input backend.key is a secret`);
      assert.ok(isSecret((r.outputs.backend as Record<string, unknown>).key), `${name}: the output backend.key is a secret`);
    }
    // The attachment's connection info and its record (dump) both carry the key.
    assert.ok(isSecret(resources["data-librbd"].outputs.connectionInfo), "connectionInfo is a secret output");
    assert.ok(isSecret(resources["data-librbd"].outputs.dump), "dump is a secret output");
    // The key files the driver hands the Ceph tools live as long as the process that ran the
    // deployment; the engine ends it with SIGINT, which must still remove them.
    const runtime = project.env.KINDLING_RUNTIME_DIR;
    assert.ok(existsSync(join(runtime, "keys")), "the driver kept its key files in the project's runtime dir");
    const keyFiles = () => filesUnder(runtime).filter((f) => f.text.includes(key)).map((f) => f.path);
    assert.deepEqual(eventually(keyFiles, (files) => files.length === 0), [], "key files outlived the provider process");
    // Every other engine run so far (up, preview, refresh, stack output --show-secrets...).
    const others = project.runs.filter((r) => !reveals(r.args));
    assert.ok(others.length >= 15, `the runs of tests 1-3 were recorded: ${others.length}`);
    for (const r of others) assert.ok(!`${r.stdout}${r.stderr}`.includes(key), `pulumi ${r.args.join(" ")} printed the key`);
  });

  test("6. destroy leaves no kindling image in the pool", () => {
    const out = outputs();
    project.ok(["destroy", "--yes", "--skip-preview"]);
    assert.deepEqual(images(POOL).filter((i) => i.startsWith("volume-")), []);
    assert.deepEqual(ceph().rbdJson<unknown[]>(["trash", "ls", POOL]), [], "nothing parked in the trash either");
    assert.throws(() => ceph().admin("rbd", ["info", spec(out.volume.id)]), /No such file or directory/, "the volume's image is gone");
    assert.deepEqual(project.stateResources(), {});
  });
});

describe("examples/ceph: bad input fails in preview, naming the property; nothing is created", { skip }, () => {
  const cases: Array<{ label: string; set: (p: Project) => void; message: RegExp }> = [
    {
      label: "an unknown extra spec",
      set: (p) => p.config("extraSpecs.colour", "red", { path: true }),
      message: /extraSpecs\.colour: unknown extra spec for the rbd driver/,
    },
    {
      label: "a malformed key",
      set: (p) => p.config("key", "not a cephx key!", { secret: true }),
      message: /backend\.key: must be a cephx key/,
    },
  ];
  for (const { label, set, message } of cases) {
    test(label, () => {
      const project = Project.example("ceph");
      try {
        project.init();
        project.config("monHost", ceph().monHost);
        project.config("user", "kindling");
        project.config("pool", BAD_POOL);
        project.config("key", ceph().key, { secret: true });
        set(project);
        const preview = project.run(["preview"]);
        assert.notEqual(preview.code, 0);
        assert.match(preview.stdout + preview.stderr, message);
        assert.ok(!(preview.stdout + preview.stderr).includes("not a cephx key!"), "a bad secret is not echoed");
        const up = project.run(["up", "--yes", "--skip-preview"]);
        assert.notEqual(up.code, 0);
        assert.match(up.stdout + up.stderr, message);
        assert.deepEqual(images(BAD_POOL), []);
        assert.deepEqual(project.stateResources(), {});
      } finally {
        project.run(["destroy", "--yes", "--skip-preview"]);
        removeDir(project.dir);
      }
    });
  }
});
