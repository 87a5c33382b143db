// STARTTLS with an X.509 certificate and with pre-shared keys, checked with libnbd's clients;
// with TLS configured, nothing is served in the clear.
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { FileBlockDevice } from "../provider/drivers/file/blockdevice";
import { NbdServer } from "../provider/nbd";
import { certificateTls, pskTls } from "../provider/nbd/tls";
import { Info, Option, Reply } from "../provider/util/nbd/protocol";
import { MiB } from "../provider/util/sizes";
import { removeDir, tempDir } from "./helpers/env";
import { RawClient, infoRequest } from "./helpers/nbd-client";

/** Runs a client without blocking: the server under test lives in this same process. */
function nbd(command: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { encoding: "utf8", timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) || 1 : 0, out: stdout + stderr });
    });
  });
}

describe("NBD over TLS", () => {
  let dir: string;
  let pki: string;
  let keys: string;
  let disk: string;
  const servers: NbdServer[] = [];
  let certPort: number;
  let pskPort: number;

  before(async () => {
    dir = tempDir();
    pki = join(dir, "pki");
    mkdirSync(pki);
    // A self-signed server certificate for 127.0.0.1; libnbd reads ca-cert.pem from the folder.
    execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", join(pki, "server-key.pem"), "-out", join(pki, "server-cert.pem"),
      "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
    copyFileSync(join(pki, "server-cert.pem"), join(pki, "ca-cert.pem"));
    keys = join(dir, "keys.psk");
    writeFileSync(keys, `alice:${"ab".repeat(32)}\n`);
    disk = join(dir, "disk");
    writeFileSync(disk, "");
    truncateSync(disk, 64 * MiB);
    const serve = async (tls: ReturnType<typeof certificateTls>) => {
      const server = new NbdServer({ port: 0, tls });
      server.exports.set({ name: "disk", readOnly: false, open: () => FileBlockDevice.open(disk, false) });
      servers.push(server);
      return (await server.listen()).port;
    };
    certPort = await serve(certificateTls(join(pki, "server-cert.pem"), join(pki, "server-key.pem")));
    pskPort = await serve(pskTls(keys));
  });
  after(async () => {
    for (const s of servers) await s.close();
    removeDir(dir);
  });

  test("with a certificate: nbdinfo and nbdcopy over TLS", async () => {
    const uri = `nbds://127.0.0.1:${certPort}/disk?tls-certificates=${pki}`;
    const info = await nbd("nbdinfo", [uri]);
    assert.equal(info.code, 0, info.out);
    assert.match(info.out, /newstyle-fixed with TLS, using structured packets/);
    const source = join(dir, "source.img");
    writeFileSync(source, Buffer.alloc(MiB, 0x61));
    truncateSync(source, 64 * MiB);
    assert.equal((await nbd("nbdcopy", [source, uri])).code, 0);
    assert.match((await nbd("nbdinfo", ["--map", uri])).out, /^\s+0\s+1048576\s+0\s+data/m);
  });

  test("with pre-shared keys: the right key connects, a wrong one does not", async () => {
    const good = await nbd("nbdinfo", [`nbds://alice@127.0.0.1:${pskPort}/disk?tls-psk-file=${keys}`]);
    assert.equal(good.code, 0, good.out);
    assert.match(good.out, /with TLS/);
    const wrongKeys = join(dir, "wrong.psk");
    writeFileSync(wrongKeys, `alice:${"cd".repeat(32)}\n`);
    assert.notEqual((await nbd("nbdinfo", [`nbds://alice@127.0.0.1:${pskPort}/disk?tls-psk-file=${wrongKeys}`])).code, 0);
    assert.notEqual((await nbd("nbdinfo", [`nbds://mallory@127.0.0.1:${pskPort}/disk?tls-psk-file=${keys}`])).code, 0, "unknown identity");
  });

  test("in the clear, a TLS server answers ERR_TLS_REQD and closes on EXPORT_NAME", async () => {
    const c = await RawClient.connect(certPort);
    await c.greet();
    for (const option of [Option.LIST, Option.STRUCTURED_REPLY]) {
      c.option(option);
      assert.equal((await c.optionReplies())[0].type, Reply.ERR_TLS_REQD);
    }
    c.option(Option.GO, infoRequest("disk", [Info.BLOCK_SIZE]));
    assert.equal((await c.optionReplies())[0].type, Reply.ERR_TLS_REQD);
    c.option(Option.EXPORT_NAME, Buffer.from("disk"));
    assert.equal(await c.closed(), true);
    assert.notEqual((await nbd("nbdinfo", [`nbd://127.0.0.1:${certPort}/disk`])).code, 0, "a plain client gets nothing");
  });
});
