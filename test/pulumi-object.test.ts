// examples/object through the real Pulumi engine against radosgw on a throwaway Ceph cluster:
// the program a user runs (a copy of it in a temp project with local state), its bucket and
// keys from stack config, and every effect checked from the store's side: the bucket listed
// and its objects read with S3 requests this test signs itself, and a volume's state rebuilt
// from its log by the driver's own reader (loadState), never from kindling's records.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { lstatSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { loadState } from "../provider/drivers/object/log";
import { decodeHeader, type RecordHeader } from "../provider/drivers/object/record";
import { S3Store } from "../provider/drivers/object/s3";
import { GiB } from "../provider/util/sizes";
import { removeDir, tempDir } from "./helpers/env";
import { stillRunning } from "./helpers/processes";
import { RadosGateway, objectStoresMissing, s3 } from "./helpers/objectstores";
import { Project } from "./helpers/pulumi";

interface VolumeOutput {
  id: string;
  name: string;
  sizeGiB: number;
  location: string;
}

interface Outputs {
  volume: VolumeOutput;
  snapshot: { id: string; volumeId: string; volumeSizeGiB: number };
  clone: VolumeOutput;
  fromSnapshot: VolumeOutput;
}

const skip = objectStoresMissing();
const BUCKET = "kindling-pulumi";
const VOLUMES = "kindling/v1/vol/";
const GENESIS = "log/0000000000000000";

let rgw: RadosGateway | undefined;

before(async () => {
  if (skip) return;
  rgw = await RadosGateway.start();
  // The driver never makes a bucket of its own: the user does, once (README).
  await bucketStore().createContainer();
});

after(() => {
  if (!rgw) return;
  rgw.stop();
  assert.deepEqual(stillRunning(rgw.procs).map((p) => p.cmdline), [], "no daemon of this test's cluster is left");
});

function gateway(): RadosGateway {
  assert.ok(rgw, "radosgw is up");
  return rgw;
}

/** kindling's own client of the bucket, for loadState: the driver's reading of a log. */
function bucketStore(): S3Store {
  const g = gateway();
  return new S3Store({ endpoint: g.endpoint, bucket: BUCKET, region: "us-east-1", accessKey: g.accessKey, secretKey: g.secretKey, timeoutMs: 30_000 });
}

const decodeXml = (s: string) => s.replace(/&(lt|gt|amp|quot|apos);/g, (_, e: string) => ({ lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" })[e] as string);

/** Every key under `prefix` in the bucket, from ListObjectsV2 pages this test requests itself. */
async function keysUnder(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  for (;;) {
    const query = new URLSearchParams({ "list-type": "2", prefix, ...(token ? { "continuation-token": token } : {}) });
    const r = await s3(gateway(), "GET", `/${BUCKET}?${query}`);
    const xml = await r.text();
    assert.equal(r.status, 200, xml);
    for (const m of xml.matchAll(/<Key>([\s\S]*?)<\/Key>/g)) keys.push(decodeXml(m[1]));
    token = /<NextContinuationToken>([\s\S]*?)<\/NextContinuationToken>/.exec(xml)?.[1];
    if (!/<IsTruncated>true<\/IsTruncated>/.test(xml) || !token) return keys.sort();
    token = decodeXml(token);
  }
}

/** The ids of the volumes that have objects in the bucket. */
async function volumeIds(): Promise<string[]> {
  return [...new Set((await keysUnder(VOLUMES)).map((k) => k.slice(VOLUMES.length).split("/")[0]))].sort();
}

/** An object's bytes, or undefined when the bucket has no such key. */
async function getObject(key: string): Promise<Buffer | undefined> {
  const r = await s3(gateway(), "GET", `/${BUCKET}/${key}`);
  const body = Buffer.from(await r.arrayBuffer());
  if (r.status === 404) return undefined;
  assert.equal(r.status, 200, body.toString("utf8"));
  return body;
}

/** The headers of a volume's log records, in order, read straight from its objects. */
async function logOf(volumeId: string): Promise<RecordHeader[]> {
  const prefix = `${VOLUMES}${volumeId}/log/`;
  const out: RecordHeader[] = [];
  for (const key of await keysUnder(prefix)) {
    const body = await getObject(key);
    assert.ok(body, `${key} is listed and can be read`);
    out.push(decodeHeader(body, key).header);
  }
  return out;
}

/** The small regular files under dir with their contents (symlinks, such as node_modules' links, are not followed). */
function filesUnder(dir: string): Array<{ path: string; text: string }> {
  const out: Array<{ path: string; text: string }> = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const st = lstatSync(path);
    if (st.isDirectory()) out.push(...filesUnder(path));
    else if (st.isFile() && st.size < 64 * 1024 * 1024) out.push({ path, text: readFileSync(path, "latin1") });
  }
  return out;
}

/** Pulumi's mark on a secret value in exported state. */
const SECRET_SIG = ["4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"] as const;
const isSecret = (value: unknown) => (value as Record<string, unknown> | undefined)?.[SECRET_SIG[0]] === SECRET_SIG[1];

describe("examples/object through the Pulumi engine on radosgw (S3)", { skip }, () => {
  let project: Project;
  const outputs = () => JSON.parse(project.ok(["stack", "output", "--json"]).stdout) as Outputs;
  const location = (id: string) => `${gateway().endpoint}/${BUCKET}/${VOLUMES}${id}/`;

  before(() => {
    project = Project.example("object");
    project.init();
    // What the README tells a user to set: the endpoint, bucket and access key, the secret key
    // as a secret, and here a cache dir inside the project, so the key can be looked for there.
    project.config("endpoint", gateway().endpoint);
    project.config("bucket", BUCKET);
    project.config("accessKey", gateway().accessKey);
    project.config("secretKey", gateway().secretKey, { secret: true });
    project.config("cacheDir", join(project.dir, "cache"));
  });

  after(() => {
    if (!project) return;
    // Whatever a failed test left behind goes, so the bucket is clean for the next run.
    project.run(["destroy", "--yes", "--skip-preview"]);
    removeDir(project.dir);
  });

  test("1. up makes a volume, a snapshot, a clone and a volume from the snapshot, each as objects in the bucket", async () => {
    project.ok(["up", "--yes", "--skip-preview"]);
    const out = outputs();
    assert.deepEqual(await volumeIds(), [out.volume.id, out.clone.id, out.fromSnapshot.id].sort(), "three volumes, each under its own prefix");
    for (const v of [out.volume, out.clone, out.fromSnapshot]) {
      assert.ok((await keysUnder(`${VOLUMES}${v.id}/`)).includes(`${VOLUMES}${v.id}/${GENESIS}`), `${v.name} has its first log record`);
      assert.equal(v.location, location(v.id));
    }
    const store = bucketStore();
    const data = await loadState(store, out.volume.id);
    assert.equal(data.sizeBytes, GiB);
    assert.equal(data.parent, undefined, "the volume stands alone");

    // The snapshot: a record in the volume's log, and `snap/<id>` naming its sequence number.
    assert.equal(out.snapshot.volumeId, out.volume.id);
    assert.equal(out.snapshot.volumeSizeGiB, 1);
    const snapObject = await getObject(`${VOLUMES}${out.volume.id}/snap/${out.snapshot.id}`);
    assert.ok(snapObject, "the snapshot's object is in the bucket");
    const snap = JSON.parse(snapObject.toString("utf8")) as { seq: number; sizeBytes: number };
    assert.equal(snap.sizeBytes, GiB);
    assert.equal(data.pins.snapshots.get(out.snapshot.id), snap.seq, "the volume's log pins the snapshot's state");
    const snapRecord = (await logOf(out.volume.id)).find((h) => h.kind === "snapshot");
    assert.equal(snapRecord?.snapshot, out.snapshot.id);
    assert.equal(snapRecord?.seq, snap.seq);

    // The clone reads through to the volume as it was; the restored volume to the snapshot's state.
    const clone = await loadState(store, out.clone.id);
    assert.equal(clone.parent?.volumeId, out.volume.id);
    assert.equal(clone.sizeBytes, GiB);
    assert.equal(data.pins.clones.get(out.clone.id), clone.parent?.seq, "the volume's log pins the clone's state");
    const restored = await loadState(store, out.fromSnapshot.id);
    assert.deepEqual({ volumeId: restored.parent?.volumeId, seq: restored.parent?.seq }, { volumeId: out.volume.id, seq: snap.seq });
    assert.equal(restored.sizeBytes, 2 * GiB, "grown past the snapshot's 1 GiB");
    assert.equal(out.fromSnapshot.sizeGiB, 2);
  });

  test("2. raising sizeGiB is previewed as an update and appends a resize record to the same volume's log", async () => {
    const before = outputs();
    project.config("sizeGiB", 2);
    const steps = project.previewSteps();
    assert.equal(steps.data, "update", `the grow is an update: ${JSON.stringify(steps)}`);
    assert.ok(!Object.values(steps).some((op) => ["replace", "create", "delete", "create-replacement", "delete-replaced"].includes(op)), `nothing is replaced: ${JSON.stringify(steps)}`);
    const objectsBefore = await keysUnder(VOLUMES);

    project.ok(["up", "--yes", "--skip-preview"]);
    const out = outputs();
    assert.equal(out.volume.id, before.volume.id, "the same volume");
    assert.equal(out.volume.sizeGiB, 2);
    const keys = await keysUnder(VOLUMES);
    assert.deepEqual(objectsBefore.filter((k) => !keys.includes(k)), [], "no object went: nothing was made again");
    const resize = (await logOf(out.volume.id)).filter((h) => h.kind === "resize");
    assert.deepEqual(resize.map((h) => h.sizeBytes), [2 * GiB], "one resize record, to 2 GiB");
    const store = bucketStore();
    assert.equal((await loadState(store, out.volume.id)).sizeBytes, 2 * GiB);
    // The clone follows the volume's size in the program; the restored volume keeps its own.
    assert.equal(out.clone.id, before.clone.id);
    assert.equal((await loadState(store, out.clone.id)).sizeBytes, 2 * GiB);
    assert.equal((await loadState(store, out.fromSnapshot.id)).sizeBytes, 2 * GiB);
    assert.deepEqual((await logOf(out.fromSnapshot.id)).filter((h) => h.kind === "resize"), [], "the restored volume was left alone");
  });

  test("3. a clone deleted behind kindling's back is caught by preview --refresh, dropped by refresh, made again by up", async () => {
    const before = outputs();
    // Before the drift the check passes, so its failure below is the drift being seen.
    project.ok(["preview", "--refresh", "--expect-no-changes"]);
    const cloneKeys = await keysUnder(`${VOLUMES}${before.clone.id}/`);
    assert.ok(cloneKeys.length >= 1);
    for (const key of cloneKeys) {
      const r = await s3(gateway(), "DELETE", `/${BUCKET}/${key}`);
      await r.arrayBuffer();
      assert.equal(r.status, 204, `DELETE ${key}`);
    }
    assert.deepEqual(await keysUnder(`${VOLUMES}${before.clone.id}/`), [], "the clone's objects are gone");

    const check = project.run(["preview", "--refresh", "--expect-no-changes"]);
    assert.notEqual(check.code, 0, "the drift is caught");
    assert.equal(project.previewSteps(["--refresh"])["data-copy"], "create", "the preview would make the clone again");

    project.ok(["refresh", "--yes", "--skip-preview"]);
    const resources = project.stateResources();
    assert.deepEqual(Object.keys(resources).sort(), ["before-upgrade", "data", "restored"], "the clone has left the state, the rest stays");
    assert.equal(resources.data.outputs.sizeGiB, 2);

    // The program still declares the clone: up makes a new one, and then all is quiet.
    project.ok(["up", "--yes", "--skip-preview"]);
    const out = outputs();
    assert.notEqual(out.clone.id, before.clone.id);
    assert.deepEqual(await volumeIds(), [out.volume.id, out.clone.id, out.fromSnapshot.id].sort());
    const store = bucketStore();
    const clone = await loadState(store, out.clone.id);
    assert.equal(clone.parent?.volumeId, out.volume.id);
    assert.equal((await loadState(store, out.volume.id)).pins.clones.get(out.clone.id), clone.parent?.seq, "the volume's log pins the new clone's state");
    project.ok(["preview", "--refresh", "--expect-no-changes"]);
  });

  test("4. the secret key never reaches state, the project's files or engine output in clear", () => {
    const key = gateway().secretKey;
    assert.ok(key.length >= 20, "radosgw gave the user a secret key");
    // The control: decrypted, the state holds the key, so the searches below can find it.
    const revealed = project.stateResources({ showSecrets: true });
    const plain = (v: unknown) => JSON.parse(String((v as Record<string, unknown>).plaintext)) as unknown;
    assert.equal(plain((revealed.data.inputs.backend as Record<string, unknown>).secretKey), key);

    assert.ok(!project.ok(["stack", "export"]).stdout.includes(key), "stack export without --show-secrets");
    const state = filesUnder(project.state);
    assert.ok(state.some((f) => f.path.endsWith(".json")), `the state files are where we look: ${state.map((f) => f.path)}`);
    for (const file of state) assert.ok(!file.text.includes(key), `${file.path} holds the key in clear`);
    // The same with grep, as a user would look; it reads the key from a file, not its argv.
    const keyDir = tempDir("kindling-object-key-");
    try {
      const keyFile = join(keyDir, "key");
      writeFileSync(keyFile, `${key}\n`, { mode: 0o600 });
      const grep = (dir: string) => spawnSync("grep", ["-rlF", "--binary-files=text", "-f", keyFile, dir], { encoding: "utf8" });
      const control = join(keyDir, "export");
      mkdirSync(control);
      writeFileSync(join(control, "revealed.json"), project.ok(["stack", "export", "--show-secrets"]).stdout, { mode: 0o600 });
      assert.equal(grep(control).status, 0, "grep finds the key where it is (stack export --show-secrets)");
      const found = grep(project.state);
      assert.equal(found.status, 1, `grep finds the key in the state directory: ${found.stdout}${found.stderr}`);
    } finally {
      removeDir(keyDir);
    }
    // Everything else the project has: its stack config, kindling's records (in its data home),
    // the driver's cache dir, the engine's home.
    const all = filesUnder(project.dir);
    assert.ok(all.some((f) => f.path.endsWith("kindling.db")), `kindling's records are among them: ${all.map((f) => f.path)}`);
    for (const file of all) assert.ok(!file.text.includes(key), `${file.path} holds the key in clear`);
    const stackConfig = readFileSync(join(project.dir, "Pulumi.test.yaml"), "utf8");
    assert.match(stackConfig, /kindling-object:secretKey:\s*\n\s*secure:/, "the key is an encrypted config value");

    // Every resource holds the backend; its key is a secret wherever it is.
    const resources = project.stateResources();
    assert.deepEqual(Object.keys(resources).sort(), ["before-upgrade", "data", "data-copy", "restored"]);
    for (const [name, r] of Object.entries(resources)) {
      assert.ok(isSecret((r.inputs.backend as Record<string, unknown>).secretKey), `${name}: the input backend.secretKey is a secret`);
      assert.ok(isSecret((r.outputs.backend as Record<string, unknown>).secretKey), `${name}: the output backend.secretKey is a secret`);
    }
    const reveals = (args: string[]) => args.includes("--show-secrets");
    const others = project.runs.filter((r) => !reveals(r.args));
    assert.ok(others.length >= 10, `the runs of tests 1-3 were recorded: ${others.length}`);
    for (const r of others) assert.ok(!`${r.stdout}${r.stderr}`.includes(key), `pulumi ${r.args.join(" ")} printed the key`);
  });

  test("5. destroy leaves no object under kindling/v1/vol/ in the bucket", async () => {
    assert.ok((await keysUnder(VOLUMES)).length > 0, "there was something to destroy");
    project.ok(["destroy", "--yes", "--skip-preview"]);
    assert.deepEqual(await keysUnder(VOLUMES), []);
    assert.deepEqual(project.stateResources(), {});
  });
});
