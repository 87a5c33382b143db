import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, readdirSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { tempDir } from "./env";

export const ROOT = resolve(__dirname, "..", "..", "..");
const PULUMI = join(ROOT, "bin", "pulumi");

/** The JS program every test project runs: it builds the resources program.json describes. */
const PROGRAM = `
const pulumi = require("@pulumi/pulumi");
const kindling = require("kindling");
const spec = require("./program.json");
const made = {};
// "@name.output" refers to an output of a resource declared earlier.
const resolve = (value) => {
  if (typeof value === "string" && value.startsWith("@")) {
    const [name, output] = value.slice(1).split(".");
    return made[name][output];
  }
  if (Array.isArray(value)) return value.map(resolve);
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, resolve(v)]));
  return value;
};
const secretBackend = (backend) => spec.secret ? { ...backend, persistence: { ...backend.persistence, options: { ...backend.persistence.options, token: pulumi.secret(spec.secret) } } } : backend;
for (const r of spec.resources) {
  const args = { backend: secretBackend(spec.backend), ...resolve(r.args) };
  made[r.name] = new kindling[r.type](r.name, args, r.opts && resolve(r.opts));
}
module.exports = Object.fromEntries(Object.entries(made).map(([name, r]) => [name, {
  id: { Volume: r.volumeId, Snapshot: r.snapshotId, Attachment: r.connectionId, Image: r.imageId }[spec.resources.find((x) => x.name === name).type],
  name: r.name, sizeGiB: r.sizeGiB, location: r.location, devicePath: r.devicePath,
}]));
`;

export interface Resource {
  type: "Volume" | "Snapshot" | "Attachment" | "Image";
  name: string;
  args: Record<string, unknown>;
  /** Resource options, such as `{ ignoreChanges: ["snapshotId"] }`; "@name.output" refers as in args. */
  opts?: Record<string, unknown>;
}

export interface ProjectOptions {
  /**
   * Run a copy of examples/<example> (its Pulumi.yaml, package.json and program) instead of
   * the generated program.json one; `backend` and `program()` are then unused.
   */
  example?: string;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A Pulumi project in a temp dir, with its own local state, using the installed kindling. */
export class Project {
  readonly dir: string;
  readonly state: string;
  readonly env: Record<string, string>;
  /** Every engine run of this project with what it printed (to look for secrets in clear). */
  readonly runs: Array<RunResult & { args: string[] }> = [];

  constructor(readonly backend: Record<string, unknown>, name = "kindling-e2e", opts: ProjectOptions = {}) {
    this.dir = tempDir("kindling-pulumi-");
    this.state = join(this.dir, ".state");
    mkdirSync(this.state);
    mkdirSync(join(this.dir, "node_modules", "@pulumi"), { recursive: true });
    symlinkSync(ROOT, join(this.dir, "node_modules", "kindling"));
    symlinkSync(join(ROOT, "node_modules", "@pulumi", "pulumi"), join(this.dir, "node_modules", "@pulumi", "pulumi"));
    if (opts.example) {
      copyExample(join(ROOT, "examples", opts.example), this.dir);
    } else {
      writeFileSync(join(this.dir, "Pulumi.yaml"), `name: ${name}\nruntime: nodejs\nmain: index.js\n`);
      writeFileSync(join(this.dir, "index.js"), PROGRAM);
      writeFileSync(join(this.dir, "package.json"), JSON.stringify({ name, private: true, main: "index.js" }));
    }
    this.env = {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: process.env.HOME ?? "/root",
      // metadata=skip: no .attrs files beside the state, which a killed engine can leave empty.
      PULUMI_BACKEND_URL: `file://${this.state}?metadata=skip`,
      PULUMI_CONFIG_PASSPHRASE: "e2e-passphrase",
      PULUMI_HOME: join(this.dir, ".pulumi-home"),
      XDG_DATA_HOME: join(this.dir, "xdg"),
    };
  }

  /** A project running a copy of examples/<example>, configured with `config()`. */
  static example(example: string): Project {
    return new Project({}, undefined, { example });
  }

  program(resources: Resource[], extra: Record<string, unknown> = {}): void {
    writeFileSync(join(this.dir, "program.json"), JSON.stringify({ backend: this.backend, resources, ...extra }, null, 2));
  }

  /** `input` goes to the engine's stdin (a secret for `config set --secret`, kept off argv). */
  run(args: string[], input?: string): RunResult {
    const r = spawnSync(PULUMI, [...args, "--non-interactive"], { cwd: this.dir, env: this.env, encoding: "utf8", maxBuffer: 64 * 1024 * 1024, input });
    const result = { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
    this.runs.push({ ...result, args });
    return result;
  }

  /** Runs and insists on success, showing the engine's output when it fails. */
  ok(args: string[], input?: string): RunResult {
    const r = this.run(args, input);
    if (r.code !== 0) throw new Error(`pulumi ${args.join(" ")} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
    return r;
  }

  /**
   * Starts a command without waiting (for the kill -9 tests). `env` adds to the project's
   * environment (a PATH with a slow losetup first); with `group`, the engine leads a process
   * group of its own, so the engine and every plugin it starts can be killed at once.
   */
  start(args: string[], opts: { env?: Record<string, string>; group?: boolean } = {}) {
    return spawn(PULUMI, [...args, "--non-interactive"], { cwd: this.dir, env: { ...this.env, ...opts.env }, stdio: "ignore", detached: opts.group ?? false });
  }

  init(stack = "test"): void {
    this.ok(["stack", "init", stack, "--secrets-provider", "passphrase"]);
  }

  /**
   * Sets a stack config value (`--path` for a key such as `extraSpecs.features`). A secret is
   * handed over on stdin, never on the command line, and stored encrypted.
   */
  config(key: string, value: string | number | boolean, opts: { secret?: boolean; path?: boolean } = {}): void {
    const flags = [...(opts.secret ? ["--secret"] : []), ...(opts.path ? ["--path"] : [])];
    if (opts.secret) this.ok(["config", "set", ...flags, key], String(value));
    else this.ok(["config", "set", ...flags, key, String(value)]);
  }

  up(extra: string[] = []): RunResult {
    return this.ok(["up", "--yes", "--skip-preview", ...extra]);
  }

  outputs(): Record<string, { id: string; name: string; sizeGiB?: number; location?: string; devicePath?: string }> {
    return JSON.parse(this.ok(["stack", "output", "--json", "--show-secrets"]).stdout);
  }

  /** The operation the preview plans for each resource name: same, update, replace, create... */
  previewSteps(extra: string[] = []): Record<string, string> {
    const r = this.ok(["preview", "--json", ...extra]);
    const steps = JSON.parse(r.stdout).steps as Array<{ op: string; urn: string }>;
    const out: Record<string, string> = {};
    for (const s of steps) {
      // With --refresh every resource has a refresh step first; what matters is the one after.
      if (s.op === "refresh") continue;
      const name = s.urn.split("::").pop() as string;
      // A replacement shows as several steps; "replace" is the one that names it.
      if (!out[name] || s.op === "replace") out[name] = s.op;
    }
    return out;
  }

  /** The resources in the state, by name; with showSecrets, secret values decrypted. */
  stateResources(opts: { showSecrets?: boolean } = {}): Record<string, { id: string; outputs: Record<string, unknown>; inputs: Record<string, unknown> }> {
    const exported = JSON.parse(this.ok(["stack", "export", ...(opts.showSecrets ? ["--show-secrets"] : [])]).stdout);
    const out: Record<string, { id: string; outputs: Record<string, unknown>; inputs: Record<string, unknown> }> = {};
    for (const r of exported.deployment.resources ?? []) {
      if (String(r.type).startsWith("pulumi-nodejs:dynamic/kindling:")) out[String(r.urn).split("::").pop() as string] = r;
    }
    return out;
  }
}

/**
 * Copies an example's project files (not its node_modules, stack configs, local state or
 * README) into a project dir, so a test runs the example exactly as a user would.
 */
function copyExample(from: string, to: string): void {
  for (const name of readdirSync(from)) {
    if (name.startsWith(".") || name === "node_modules" || name === "README.md" || /^Pulumi\..+\.ya?ml$/.test(name)) continue;
    if (statSync(join(from, name)).isFile()) copyFileSync(join(from, name), join(to, name));
  }
}

/**
 * A project whose resources live on a file backend of its own (in a temp dir), with a kindling
 * configuration file naming the same backend, so the command and the library see what the
 * stack made.
 */
export function fileProject(name: string): { dir: string; pool: string; config: string; project: Project } {
  const dir = tempDir();
  const pool = join(dir, "volumes");
  const config = join(dir, "kindling.json");
  writeFileSync(config, JSON.stringify({ backends: { [name]: { driver: "file", path: pool } } }));
  const project = new Project({ name, driver: "file", path: pool });
  project.init();
  return { dir, pool, config, project };
}
