// The object stores the object driver is built for, as they run on this machine: radosgw's S3
// and Swift APIs on a throwaway Ceph cluster, and a Swift all-in-one. What the driver relies on
// is checked here with plain HTTP (Node's fetch, SigV4 signed by hand), so a store that changes
// under it fails here first: conditional creates and their atomicity (its commit and fencing
// step), compare-and-swap by ETag, ranged reads, expiry (Swift's lease), refused credentials.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { randomBytes } from "node:crypto";
import { spawnSync } from "node:child_process";
import { statSync } from "node:fs";
import { join } from "node:path";
import { processes, stillRunning } from "./helpers/processes";
import { ROOT } from "./helpers/pulumi";
import {
  RadosGateway,
  SwiftAio,
  needsObjectStores,
  objectStoresMissing,
  s3,
  swift,
  swiftAuth,
  swiftAuthResponse,
  type SwiftSession,
} from "./helpers/objectstores";

const skip = objectStoresMissing();
let rgw: RadosGateway | undefined;
let saio: SwiftAio | undefined;

before(async () => {
  if (skip) return;
  // One after the other: two cores, and each bring-up is mostly CPU.
  rgw = await RadosGateway.start();
  saio = await SwiftAio.start();
});

after(() => {
  rgw?.stop();
  saio?.stop();
});

function gateway(): RadosGateway {
  assert.ok(rgw, "radosgw is up");
  return rgw;
}
function allInOne(): SwiftAio {
  assert.ok(saio, "the Swift all-in-one is up");
  return saio;
}

/** The statuses of `n` requests started together, sorted. */
async function race(n: number, request: (i: number) => Promise<Response>): Promise<number[]> {
  const answers = await Promise.all(Array.from({ length: n }, (_, i) => request(i)));
  await Promise.all(answers.map((r) => r.arrayBuffer()));
  return answers.map((r) => r.status).sort((a, b) => a - b);
}
const count = (xs: number[], x: number) => xs.filter((y) => y === x).length;

/** The body of a GET, and its status. */
async function read(r: Response): Promise<{ status: number; body: Buffer }> {
  return { status: r.status, body: Buffer.from(await r.arrayBuffer()) };
}

describe("radosgw, S3 API", { skip }, () => {
  const bucket = "kindling-s3-test";

  test("a bucket is created", async () => {
    const r = await s3(gateway(), "PUT", `/${bucket}`);
    assert.equal(r.status, 200, await r.text());
    const head = await s3(gateway(), "HEAD", `/${bucket}`);
    assert.equal(head.status, 200);
  });

  test("PUT with If-None-Match: * creates once; the second gets 412 and the first body stays", async () => {
    const first = await s3(gateway(), "PUT", `/${bucket}/log/0`, { headers: { "If-None-Match": "*" }, body: "first" });
    assert.equal(first.status, 200, await first.text());
    const second = await s3(gateway(), "PUT", `/${bucket}/log/0`, { headers: { "If-None-Match": "*" }, body: "second" });
    assert.equal(second.status, 412, await second.text());
    const got = await read(await s3(gateway(), "GET", `/${bucket}/log/0`));
    assert.equal(got.status, 200);
    assert.equal(got.body.toString(), "first");
  });

  test("16 concurrent If-None-Match: * PUTs on one new key: exactly one wins, and its body is the one stored", async (t) => {
    const bodies = Array.from({ length: 16 }, (_, i) => `writer ${i} ${randomBytes(8).toString("hex")}`);
    const answers = await Promise.all(bodies.map((body) => s3(gateway(), "PUT", `/${bucket}/log/race`, { headers: { "If-None-Match": "*" }, body })));
    const statuses = answers.map((r) => r.status);
    await Promise.all(answers.map((r) => r.arrayBuffer()));
    t.diagnostic(`statuses: ${[...statuses].sort().join(" ")}`);
    assert.equal(count(statuses, 200), 1, `one winner: ${statuses.join(" ")}`);
    assert.equal(count(statuses, 412), 15, `fifteen 412s: ${statuses.join(" ")}`);
    const stored = await read(await s3(gateway(), "GET", `/${bucket}/log/race`));
    assert.equal(stored.body.toString(), bodies[statuses.indexOf(200)]);
  });

  test("If-Match: a stale ETag gets 412, the current one unquoted gets 200 (quoted, as HEAD gives it, 412)", async () => {
    const v1 = await s3(gateway(), "PUT", `/${bucket}/lease`, { body: "holder a" });
    assert.equal(v1.status, 200);
    const stale = (v1.headers.get("etag") ?? "").replace(/"/g, "");
    const v2 = await s3(gateway(), "PUT", `/${bucket}/lease`, { headers: { "If-Match": stale }, body: "holder b" });
    assert.equal(v2.status, 200, "If-Match with the current ETag, unquoted");
    const current = (v2.headers.get("etag") ?? "").replace(/"/g, "");
    assert.notEqual(current, stale);

    const late = await s3(gateway(), "PUT", `/${bucket}/lease`, { headers: { "If-Match": stale }, body: "holder c" });
    assert.equal(late.status, 412, "If-Match with a stale ETag");
    const quoted = await s3(gateway(), "PUT", `/${bucket}/lease`, { headers: { "If-Match": `"${current}"` }, body: "holder d" });
    assert.equal(quoted.status, 412, "radosgw 16.2 compares If-Match unquoted: a quoted ETag never matches");
    const got = await read(await s3(gateway(), "GET", `/${bucket}/lease`));
    assert.equal(got.body.toString(), "holder b");
  });

  test("a ranged GET gets 206 and exactly those bytes", async () => {
    const data = randomBytes(1024 * 1024 + 13);
    assert.equal((await s3(gateway(), "PUT", `/${bucket}/segment`, { body: data })).status, 200);
    for (const [start, end] of [[0, 0], [4096, 65535], [1024 * 1024 - 7, 1024 * 1024 + 12]]) {
      const got = await read(await s3(gateway(), "GET", `/${bucket}/segment`, { headers: { Range: `bytes=${start}-${end}` } }));
      assert.equal(got.status, 206);
      assert.deepEqual(got.body, data.subarray(start, end + 1), `bytes ${start}-${end}`);
    }
  });

  test("DELETE removes an object: GET then gets 404", async () => {
    const r = await s3(gateway(), "DELETE", `/${bucket}/segment`);
    assert.equal(r.status, 204);
    assert.equal((await read(await s3(gateway(), "GET", `/${bucket}/segment`))).status, 404);
  });

  test("a wrong secret key gets 403", async () => {
    const wrong = { endpoint: gateway().endpoint, accessKey: gateway().accessKey, secretKey: `${gateway().secretKey}x` };
    const r = await s3(wrong, "GET", `/${bucket}/log/0`);
    assert.equal(r.status, 403);
    assert.match(await r.text(), /SignatureDoesNotMatch/);
  });
});

describe("Swift all-in-one", { skip }, () => {
  const container = "kindling-swift-test";
  let session: SwiftSession | undefined;
  const open = (): SwiftSession => {
    assert.ok(session, "authenticated");
    return session;
  };

  test("v1 auth gives a token and a storage URL on this proxy", async () => {
    session = await swiftAuth(allInOne());
    assert.match(session.storageUrl, /^http:\/\/127\.0\.0\.1:\d+\/v1\/AUTH_test$/);
    assert.ok(session.token.length > 0);
  });

  test("its own swift.conf is in use, not /etc/swift's: /info names the storage policy up.sh wrote", async () => {
    const info = (await (await fetch(new URL("/info", allInOne().authUrl))).json()) as { swift: { policies: { name: string }[] } };
    assert.deepEqual(info.swift.policies.map((p) => p.name), ["kindling"]);
  });

  test("a container is created", async () => {
    const r = await swift(open(), "PUT", container);
    assert.equal(r.status, 201);
  });

  test("PUT with If-None-Match: * creates once; the second gets 412 and the first body stays", async () => {
    const first = await swift(open(), "PUT", `${container}/log/0`, { headers: { "If-None-Match": "*" }, body: "first" });
    assert.equal(first.status, 201);
    const second = await swift(open(), "PUT", `${container}/log/0`, { headers: { "If-None-Match": "*" }, body: "second" });
    assert.equal(second.status, 412);
    const got = await read(await swift(open(), "GET", `${container}/log/0`, { headers: { "X-Newest": "true" } }));
    assert.equal(got.body.toString(), "first");
  });

  test("16 concurrent If-None-Match: * PUTs on one new key: at least one wins (how many is measured, not promised)", async (t) => {
    const winners: number[] = [];
    for (let round = 0; round < 3; round++) {
      const statuses = await race(16, (i) => swift(open(), "PUT", `${container}/log/race-${round}`, { headers: { "If-None-Match": "*" }, body: `writer ${i}` }));
      t.diagnostic(`round ${round}: ${statuses.join(" ")}`);
      assert.ok(count(statuses, 201) >= 1, `at least one winner: ${statuses.join(" ")}`);
      assert.equal(count(statuses, 201) + count(statuses, 412) + count(statuses, 202), 16, `only 201, 202 or 412: ${statuses.join(" ")}`);
      winners.push(count(statuses, 201));
    }
    t.diagnostic(`winners of 16 per round: ${winners.join(", ")} (Swift checks each replica before the body is staged, so overlapping PUTs can all pass)`);
  });

  test("X-Delete-After: the object is gone once it expires, and If-None-Match: * then creates it again", async () => {
    const put = await swift(open(), "PUT", `${container}/lease`, { headers: { "X-Delete-After": "1" }, body: "holder a" });
    assert.equal(put.status, 201);
    let gone = false;
    for (let i = 0; i < 100 && !gone; i++) {
      const r = await swift(open(), "HEAD", `${container}/lease`, { headers: { "X-Newest": "true" } });
      await r.arrayBuffer();
      assert.ok(r.status === 200 || r.status === 404, `HEAD answered ${r.status}`);
      gone = r.status === 404;
      if (!gone) await sleep(200);
    }
    assert.ok(gone, "the object expired within 20 s");
    // Expired counts as absent, so a lease can be taken again with If-None-Match: *.
    const again = await swift(open(), "PUT", `${container}/lease`, { headers: { "If-None-Match": "*", "X-Delete-After": "30" }, body: "holder b" });
    assert.equal(again.status, 201);
    const head = await swift(open(), "HEAD", `${container}/lease`, { headers: { "X-Newest": "true" } });
    await head.arrayBuffer();
    assert.equal(head.status, 200, "the new lease is there");
    assert.match(head.headers.get("x-delete-at") ?? "", /^\d+$/, "and carries its expiry");
  });

  test("a ranged GET gets 206 and exactly those bytes", async () => {
    const data = randomBytes(1024 * 1024 + 13);
    assert.equal((await swift(open(), "PUT", `${container}/segment`, { body: data })).status, 201);
    for (const [start, end] of [[0, 0], [4096, 65535], [1024 * 1024 - 7, 1024 * 1024 + 12]]) {
      const got = await read(await swift(open(), "GET", `${container}/segment`, { headers: { Range: `bytes=${start}-${end}` } }));
      assert.equal(got.status, 206);
      assert.deepEqual(got.body, data.subarray(start, end + 1), `bytes ${start}-${end}`);
    }
  });

  test("a wrong key gets 401, and a made-up token too", async () => {
    const r = await swiftAuthResponse({ authUrl: allInOne().authUrl, user: allInOne().user, key: `${allInOne().key}x` });
    await r.arrayBuffer();
    assert.equal(r.status, 401);
    const bad = await swift({ ...open(), token: "AUTH_tk00000000000000000000000000000000" }, "GET", `${container}/log/0`);
    await bad.arrayBuffer();
    assert.equal(bad.status, 401);
  });
});

describe("radosgw, Swift API", { skip }, () => {
  const container = "kindling-rgw-swift-test";
  let session: SwiftSession | undefined;
  const open = (): SwiftSession => {
    assert.ok(session, "authenticated");
    return session;
  };

  test("v1 auth of the Swift subuser gives a token and radosgw's storage URL", async () => {
    session = await swiftAuth(gateway().swift);
    assert.equal(session.storageUrl, `${gateway().endpoint}/swift/v1`);
    assert.equal((await swift(open(), "PUT", container)).status, 201);
  });

  test("If-None-Match: * on an existing object is ignored: 201 and overwritten, so it cannot fence", async () => {
    const first = await swift(open(), "PUT", `${container}/log/0`, { headers: { "If-None-Match": "*" }, body: "first" });
    assert.equal(first.status, 201);
    const second = await swift(open(), "PUT", `${container}/log/0`, { headers: { "If-None-Match": "*" }, body: "second" });
    assert.equal(second.status, 201, "radosgw 16.2's Swift API does not check If-None-Match on PUT");
    const got = await read(await swift(open(), "GET", `${container}/log/0`));
    assert.equal(got.body.toString(), "second");
  });

  test("a wrong key gets 401", async () => {
    const r = await swiftAuthResponse({ ...gateway().swift, key: `${gateway().swiftKey}x` });
    await r.arrayBuffer();
    assert.equal(r.status, 401);
  });
});

describe("the stores' scripts", { skip }, () => {
  test("keys live in files of mode 0600 (the proxy's configuration too), and on no process's command line", () => {
    const cluster = gateway().cluster.dir;
    const aio = allInOne().dir;
    for (const file of [join(cluster, "rgw.access-key"), join(cluster, "rgw.secret-key"), join(cluster, "rgw.swift-key"), join(aio, "tester.key"), join(aio, "etc", "proxy-server.conf")]) {
      assert.equal(statSync(file).mode & 0o777, 0o600, file);
    }
    const secrets = [gateway().secretKey, gateway().swiftKey, allInOne().key];
    const exposed = processes().filter((p) => secrets.some((secret) => p.cmdline.includes(secret)));
    assert.deepEqual(exposed.map((p) => p.pid), []);
  });

  test("swift up.sh refuses a second start in the same directory, and the first keeps running", () => {
    const r = spawnSync(join(ROOT, "scripts", "swift", "up.sh"), [allInOne().dir], { encoding: "utf8" });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /is not empty/);
    assert.equal(stillRunning(allInOne().procs).length, allInOne().procs.length);
  });
});

test("stopping both by pid leaves none of their processes running (radosgw, the Ceph daemons, swift's servers, memcached)", (t) => {
  if (needsObjectStores(t)) return;
  const procs = [...gateway().procs, ...allInOne().procs];
  const names = procs.map((p) => p.cmdline.split(" ")[0].split("/").pop());
  for (const expected of ["radosgw", "ceph-osd", "ceph-mon", "ceph-mgr", "memcached"]) assert.ok(names.includes(expected), `${expected} among ${names.join(", ")}`);
  assert.equal(procs.filter((p) => /run-server\.py/.test(p.cmdline)).length, 4, "proxy, account, container and object servers");
  assert.equal(stillRunning(procs).length, procs.length, "all running before the stop");
  gateway().stop();
  allInOne().stop();
  assert.deepEqual(stillRunning(procs).map((p) => p.cmdline), []);
});
