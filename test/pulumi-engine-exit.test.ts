// Plugin processes end with the engine (defect D14: after `kill -9` of `pulumi up`, kindling's
// language host and the dynamic-provider process ran on, parented to init, for as long as
// anyone watched). First the watch itself, against a gRPC server this test controls; then the
// real engine killed in the middle of a long create.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import { removeDir, tempDir } from "./helpers/env";
import { Project } from "./helpers/pulumi";
import { descendants, stillRunning, type Proc } from "./helpers/processes";

const ENGINE_WATCH = resolve(__dirname, "..", "provider", "pulumi", "engine-watch.js");

async function waitFor(condition: () => boolean, tries: number, everyMs: number): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    if (condition()) return true;
    await sleep(everyMs);
  }
  return condition();
}

describe("the engine watch", () => {
  const servers: grpc.Server[] = [];
  const children: ChildProcess[] = [];
  after(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    for (const s of servers) s.forceShutdown();
  });

  /** A stand-in engine whose health answers follow `answer(n)` for the n-th check (from 1). */
  async function engine(answer: (n: number) => boolean): Promise<{ address: string; checks: () => number; server: grpc.Server }> {
    const server = new grpc.Server();
    servers.push(server);
    let checks = 0;
    server.register(
      "/grpc.health.v1.Health/Check",
      (_call: unknown, callback: grpc.sendUnaryData<Buffer>) => {
        checks += 1;
        if (answer(checks)) callback(null, Buffer.alloc(0));
        else callback({ code: grpc.status.UNAVAILABLE, details: "not now" });
      },
      (response: Buffer) => response,
      (request: Buffer) => request,
      "unary",
    );
    const port = await new Promise<number>((done, fail) => server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? fail(err) : done(p))));
    return { address: `127.0.0.1:${port}`, checks: () => checks, server };
  }

  /** A process that only watches the engine, and notes on exit that its exit handlers ran. */
  function watcher(address: string): { child: ChildProcess; output: () => string } {
    const script = `
      require(${JSON.stringify(ENGINE_WATCH)}).watchEngine(${JSON.stringify(address)}, { intervalMs: 100 });
      process.on("exit", (code) => console.log("exit handler ran, code " + code));
      setInterval(() => {}, 1000); // stands for the plugin's gRPC server, which keeps it alive
    `;
    const child = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "pipe"] });
    children.push(child);
    let output = "";
    child.stdout?.on("data", (d) => (output += d));
    child.stderr?.on("data", (d) => (output += d));
    return { child, output: () => output };
  }

  test("one failed check is a hiccup; two in a row end the process through a normal exit", async () => {
    // Check 3 fails, the others answer until the engine goes down.
    let down = false;
    const e = await engine((n) => n !== 3 && !down);
    const w = watcher(e.address);
    assert.ok(await waitFor(() => e.checks() >= 6 || w.child.exitCode !== null, 600, 50), "the watcher checks the engine");
    assert.equal(w.child.exitCode, null, `still running after a single failure: ${w.output()}`);
    const exited = new Promise<number | null>((done) => w.child.once("exit", (code) => done(code)));
    const downAt = e.checks();
    down = true;
    assert.equal(await exited, 1);
    assert.ok(e.checks() >= downAt + 2, "it gave up after two failures in a row");
    assert.match(w.output(), /exit handler ran, code 1/);
    assert.match(w.output(), new RegExp(`the Pulumi engine at ${e.address} no longer answers`));
  });

  test("an engine that is gone (nothing listens any more) ends the process", async () => {
    const e = await engine(() => true);
    const w = watcher(e.address);
    assert.ok(await waitFor(() => e.checks() >= 2, 600, 50));
    e.server.forceShutdown();
    const code = await new Promise<number | null>((done) => w.child.once("exit", (c) => done(c)));
    assert.equal(code, 1);
    assert.match(w.output(), /exit handler ran/);
  });
});

describe("kill -9 of the engine in the middle of `pulumi up` (D14)", () => {
  let dir: string;
  let project: Project;
  let left: Proc[] = [];
  after(() => {
    // Whatever outlived the bound is ended here, by pid (and only if it is still the same process).
    for (const p of stillRunning(left)) process.kill(p.pid, "SIGKILL");
    if (project) removeDir(project.dir);
    if (dir) removeDir(dir);
  });

  test("the language host, the program and the dynamic-provider process all exit", async () => {
    dir = tempDir();
    const pool = join(dir, "volumes");
    project = new Project({ name: "orphans", driver: "file", path: pool });
    project.init();
    // A create that takes a while: 4 GiB written out in full.
    project.program([{ type: "Volume", name: "big", args: { sizeGiB: 4, extraSpecs: { preallocation: "full" } } }]);
    const engine = project.start(["up", "--yes", "--skip-preview"]);
    const creating = () => existsSync(pool) && readdirSync(pool).some((f) => f.startsWith("volume-"));
    assert.ok(await waitFor(creating, 1200, 100), "the create started");

    const plugins = descendants(engine.pid as number);
    left = plugins;
    const named = (pattern: RegExp) => plugins.filter((p) => pattern.test(p.cmdline));
    assert.equal(named(/language-host\.js/).length, 1, plugins.map((p) => p.cmdline).join("\n"));
    assert.equal(named(/dynamic-provider/).length, 1, plugins.map((p) => p.cmdline).join("\n"));
    assert.equal(named(/cmd[\\/]run/).length, 1, "the program, run by the language host");

    engine.kill("SIGKILL");
    await new Promise((done) => engine.once("exit", done));
    const gone = await waitFor(() => stillRunning(plugins).length === 0, 120, 500);
    assert.ok(gone, `still running a minute after the engine died:\n${stillRunning(plugins).map((p) => `${p.pid} ${p.cmdline}`).join("\n")}`);
  });
});
