import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { loadConfig, openBackends } from "../library/config";
import type { ImageServiceSet } from "../library/images";
import { BackendError, KindlingError, errorMessage, type ErrorCode } from "../util/errors";
import type { Context, Values } from "./context";
import { output, printable } from "./output";
// Each command's module is loaded when that command runs, not before: `kindling nbd serve` is a
// long-lived daemon and should not hold the image pipeline's code, nor `volume list` wait for it.
const commands = {
  backends: () => require("./commands/backends") as typeof import("./commands/backends"),
  stats: () => require("./commands/stats") as typeof import("./commands/stats"),
  volume: () => require("./commands/volume") as typeof import("./commands/volume"),
  snapshot: () => require("./commands/snapshot") as typeof import("./commands/snapshot"),
  attach: () => require("./commands/attach") as typeof import("./commands/attach"),
  connect: () => require("./commands/connect") as typeof import("./commands/connect"),
  nbd: () => require("./commands/nbd") as typeof import("./commands/nbd"),
  download: () => require("./commands/download") as typeof import("./commands/download"),
  lock: () => require("./commands/lock") as typeof import("./commands/lock"),
  image: () => require("./commands/image") as typeof import("./commands/image"),
  imageCache: () => require("./commands/image-cache") as typeof import("./commands/image-cache"),
};
const imageServices = () => require("../library/images") as typeof import("../library/images");

const USAGE = `usage: kindling [--config FILE] [--backend NAME] [--json] COMMAND

  backends                                   configured backends and their pools
  stats [--refresh]                          capacity stats per pool
  volume create NAME --size GIB [--pool P] [--from-snapshot SNAP | --from-volume VOL]
                [--spec K=V]... [--qos K=V]... [--meta K=V]... [--description TEXT]
  volume create NAME --image REF [--size GIB] [--sha256 HEX | --sha512 HEX] [--allow-unverified]
                [--no-cache]                 an image of any allowed format (SERVICE:NAME_OR_ID,
                                             file:PATH or an http(s) URL) into a new volume; with
                                             an "imageCache" configured, a clone of the cached image
  volume list | show VOL [--refresh] | delete VOL
                                             show --refresh adds what the storage holds
  volume extend VOL --size GIB
  volume clone VOL NAME [--size GIB]
  volume download VOL FILE [--snapshot SNAP] [--force]
                                             a sparse raw image of the volume or a snapshot
  volume lock VOL | unlock VOL [--force]     hold or release the volume's writer lock by hand
  snapshot create VOL NAME | list [VOL] | show SNAP [--refresh] | delete SNAP
  attach VOL [--read-only]                   prints the block device path
  detach VOL
  connect VOL|SNAP --protocol P [--connector JSON] [--mode rw|ro] [--show-secrets]
                [--format info|libvirt|libvirt-secret] [--target DEV]
                                             protocols: local (file), rbd (Ceph), nbd (any;
                                             snapshots: nbd, read-only); keys are masked
                                             unless --show-secrets; libvirt: the <disk> XML
                                             for virsh attach-device (target DEV, vdb), and
                                             for rbd the <secret> XML its key goes in
  disconnect VOL|SNAP
  nbd serve [--listen HOST:PORT] [--advertise HOST:PORT]
            [--tls-cert F --tls-key F [--tls-ca F] | --tls-psk F]
                                             serve every nbd export (default 127.0.0.1:10809);
                                             connection info names --advertise, else --listen
  validate-connector --protocol P --connector JSON
  image list [--service S] | show IMAGE | delete IMAGE
  image create NAME (--from-volume VOL | --from-snapshot SNAP) [--disk-format F] [--compress]
                [--service S] [--meta K=V]...
                                             F: raw (the default, streamed), qcow2 (--compress),
                                             vmdk (streamOptimized), vhdx, vdi
  image create NAME (--file PATH | --url URL) [--sha256 HEX | --sha512 HEX] [--allow-unverified]
                [--disk-format F] [--service S] [--meta K=V]...
                                             every digest checked, the format read from the
                                             content (F, if given, must be it), raw streamed;
                                             images of a configured image service (Glance);
                                             IMAGE is SERVICE:NAME_OR_ID, or NAME_OR_ID with
                                             one service (a name: its newest image)
  image cache list [--pool P] | warm REF [--sha256 HEX | --sha512 HEX] [--pool P] [--pin]
  image cache pin KEY | unpin KEY [--pool P] | prune [--pool P] [--all]
                                             the backend's cached images, keyed by content (KEY:
                                             an entry's sha256, or its first 8+ digits); prune
                                             enforces the limits, --all evicts all not pinned
                                             or in use

Configuration: --config FILE, else $KINDLING_CONFIG, else ./kindling.json, else one file
backend "local" under $XDG_DATA_HOME/kindling. Image services go under "imageServices", the
image cache's limits under "imageCache" ({ "maxSizeGiB": 100, "maxCount": 20, "maxAgeDays": 30 }).`;

const OPTIONS = {
  config: { type: "string" },
  backend: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
  refresh: { type: "boolean" },
  size: { type: "string" },
  pool: { type: "string" },
  "from-snapshot": { type: "string" },
  "from-volume": { type: "string" },
  spec: { type: "string", multiple: true },
  qos: { type: "string", multiple: true },
  meta: { type: "string", multiple: true },
  description: { type: "string" },
  "read-only": { type: "boolean" },
  protocol: { type: "string" },
  connector: { type: "string" },
  mode: { type: "string" },
  "show-secrets": { type: "boolean" },
  listen: { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "tls-psk": { type: "string" },
  "tls-ca": { type: "string" },
  advertise: { type: "string" },
  format: { type: "string" },
  target: { type: "string" },
  snapshot: { type: "string" },
  force: { type: "boolean" },
  service: { type: "string" },
  image: { type: "string" },
  sha256: { type: "string" },
  sha512: { type: "string" },
  "allow-unverified": { type: "boolean" },
  "no-cache": { type: "boolean" },
  pin: { type: "boolean" },
  all: { type: "boolean" },
  file: { type: "string" },
  url: { type: "string" },
  "disk-format": { type: "string" },
  compress: { type: "boolean" },
} as const;

const GLOBAL = ["config", "backend", "json", "help", "version"];

interface Command {
  run: (ctx: Context) => Promise<void>;
  /** Options this command takes besides the global ones. */
  options: string[];
  /** Positional arguments: [required, maximum]. */
  args: [number, number];
}

const COMMANDS: Record<string, Command> = {
  backends: { run: (ctx) => commands.backends().backends(ctx), options: [], args: [0, 0] },
  stats: { run: (ctx) => commands.stats().stats(ctx), options: ["refresh"], args: [0, 0] },
  "volume create": { run: (ctx) => commands.volume().volumeCreate(ctx), options: ["size", "pool", "from-snapshot", "from-volume", "image", "sha256", "sha512", "allow-unverified", "no-cache", "spec", "qos", "meta", "description"], args: [1, 1] },
  "volume list": { run: (ctx) => commands.volume().volumeList(ctx), options: [], args: [0, 0] },
  "volume show": { run: (ctx) => commands.volume().volumeShow(ctx), options: ["refresh"], args: [1, 1] },
  "volume delete": { run: (ctx) => commands.volume().volumeDelete(ctx), options: [], args: [1, 1] },
  "volume extend": { run: (ctx) => commands.volume().volumeExtend(ctx), options: ["size"], args: [1, 1] },
  "volume clone": { run: (ctx) => commands.volume().volumeClone(ctx), options: ["size", "description"], args: [2, 2] },
  "volume download": { run: (ctx) => commands.download().volumeDownload(ctx), options: ["snapshot", "force"], args: [2, 2] },
  "volume lock": { run: (ctx) => commands.lock().volumeLock(ctx), options: [], args: [1, 1] },
  "volume unlock": { run: (ctx) => commands.lock().volumeUnlock(ctx), options: ["force"], args: [1, 1] },
  "snapshot create": { run: (ctx) => commands.snapshot().snapshotCreate(ctx), options: ["description"], args: [2, 2] },
  "snapshot list": { run: (ctx) => commands.snapshot().snapshotList(ctx), options: [], args: [0, 1] },
  "snapshot show": { run: (ctx) => commands.snapshot().snapshotShow(ctx), options: ["refresh"], args: [1, 1] },
  "snapshot delete": { run: (ctx) => commands.snapshot().snapshotDelete(ctx), options: [], args: [1, 1] },
  attach: { run: (ctx) => commands.attach().attach(ctx), options: ["read-only"], args: [1, 1] },
  detach: { run: (ctx) => commands.attach().detach(ctx), options: [], args: [1, 1] },
  connect: { run: (ctx) => commands.connect().connect(ctx), options: ["protocol", "connector", "mode", "show-secrets", "format", "target"], args: [1, 1] },
  disconnect: { run: (ctx) => commands.connect().disconnect(ctx), options: [], args: [1, 1] },
  "validate-connector": { run: (ctx) => commands.connect().validateConnector(ctx), options: ["protocol", "connector"], args: [0, 0] },
  "nbd serve": { run: (ctx) => commands.nbd().nbdServe(ctx), options: ["listen", "advertise", "tls-cert", "tls-key", "tls-ca", "tls-psk"], args: [0, 0] },
  "image list": { run: (ctx) => commands.image().imageList(ctx), options: ["service"], args: [0, 0] },
  "image show": { run: (ctx) => commands.image().imageShow(ctx), options: [], args: [1, 1] },
  "image delete": { run: (ctx) => commands.image().imageDelete(ctx), options: [], args: [1, 1] },
  "image create": { run: (ctx) => commands.image().imageCreate(ctx), options: ["from-volume", "from-snapshot", "file", "url", "sha256", "sha512", "allow-unverified", "disk-format", "compress", "service", "meta"], args: [1, 1] },
  "image cache list": { run: (ctx) => commands.imageCache().imageCacheList(ctx), options: ["pool"], args: [0, 0] },
  "image cache warm": { run: (ctx) => commands.imageCache().imageCacheWarm(ctx), options: ["pool", "sha256", "sha512", "pin"], args: [1, 1] },
  "image cache pin": { run: (ctx) => commands.imageCache().imageCachePin(ctx), options: ["pool"], args: [1, 1] },
  "image cache unpin": { run: (ctx) => commands.imageCache().imageCacheUnpin(ctx), options: ["pool"], args: [1, 1] },
  "image cache prune": { run: (ctx) => commands.imageCache().imageCachePrune(ctx), options: ["pool", "all"], args: [0, 0] },
};

/** Exit codes by error kind, so scripts can tell "not there" from "bad input". */
const EXIT: Record<ErrorCode | "USAGE", number> = {
  USAGE: 2,
  INVALID_INPUT: 2,
  NOT_FOUND: 3,
  IN_USE: 4,
  CONFLICT: 4,
  NO_SPACE: 5,
  // As a shell reports a command that SIGINT stopped.
  INTERRUPTED: 130,
  BACKEND_ERROR: 1,
};

class UsageError extends Error {}

function findCommand(positionals: string[]): { name: string; command: Command; rest: string[] } {
  for (const words of [3, 2, 1]) {
    const name = positionals.slice(0, words).join(" ");
    if (Object.hasOwn(COMMANDS, name)) return { name, command: COMMANDS[name], rest: positionals.slice(words) };
  }
  const given = positionals.slice(0, 2).join(" ");
  throw new UsageError(given ? `unknown command ${JSON.stringify(given)}; see kindling --help` : "no command given; see kindling --help");
}

function version(): string {
  const pkg = JSON.parse(readFileSync(join(__dirname, "..", "..", "..", "package.json"), "utf8")) as { version: string };
  return pkg.version;
}

export async function main(argv: string[]): Promise<number> {
  let json = argv.includes("--json");
  try {
    let parsed;
    try {
      parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
    } catch (err) {
      // node's messages name the flag: "Unknown option '--colour'".
      throw new UsageError(errorMessage(err).replace(/\. To specify a positional argument.*$/s, ""));
    }
    const values = parsed.values as Values & { help?: boolean; version?: boolean };
    json = values.json ?? false;
    if (values.help) {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    if (values.version) {
      process.stdout.write(`${version()}\n`);
      return 0;
    }
    if (parsed.positionals[0] === "help") {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    const { name, command, rest } = findCommand(parsed.positionals);
    for (const key of Object.keys(values)) {
      if (!GLOBAL.includes(key) && !command.options.includes(key)) throw new UsageError(`--${key}: not an option of \`kindling ${name}\``);
    }
    if (rest.length < command.args[0]) throw new UsageError(`\`kindling ${name}\` needs ${command.args[0]} argument(s); see kindling --help`);
    if (rest.length > command.args[1]) throw new UsageError(`\`kindling ${name}\`: unexpected argument ${JSON.stringify(rest[command.args[1]])}`);

    const loaded = loadConfig({ path: values.config });
    const set = await openBackends(loaded);
    let images: ImageServiceSet | undefined;
    try {
      await command.run({
        loaded,
        backends: set,
        backend: () => set.get(values.backend),
        images: () => (images ??= imageServices().openImageServices(loaded)),
        values,
        args: rest,
        out: output(json),
      });
    } finally {
      images?.close();
      await set.close();
    }
    return 0;
  } catch (err) {
    return report(err);
  }
}

/** Errors quote what they were given (names, paths): shown, never acted on by a terminal. */
function say(text: string): void {
  process.stderr.write(`${printable(text, { keepNewlines: true })}\n`);
}

function report(err: unknown): number {
  if (err instanceof UsageError) {
    say(`kindling: ${err.message}`);
    return EXIT.USAGE;
  }
  if (err instanceof KindlingError) {
    say(`kindling: ${err.message}`);
    if (err instanceof BackendError && err.stderr && !err.message.includes(err.stderr.trim())) say(err.stderr.trim());
    return EXIT[err.code];
  }
  say(`kindling: ${errorMessage(err)}`);
  if (process.env.KINDLING_DEBUG) console.error(err);
  return 1;
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
