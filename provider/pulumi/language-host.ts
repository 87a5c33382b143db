// A Pulumi language host for Node programs: the engine starts it as `pulumi-language-nodejs`,
// reads the port it prints, and asks it over gRPC to run the program. Running is delegated to
// the Node SDK's own runner (`@pulumi/pulumi/cmd/run`), exactly as Pulumi's Go host does.
//
// Why it exists: the Go module proxy reachable here serves the `pulumi` CLI (pkg/v3) but not the
// module of Pulumi's Go language host, so kindling ships this small host to drive the real
// engine with ordinary `pulumi up` in a project directory.
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { engineAddressFromArgs, exitWithEngine, watchEngine } from "./engine-watch";

/* eslint-disable @typescript-eslint/no-require-imports */
const languageGrpc = require("@pulumi/pulumi/proto/language_grpc_pb");
const languageProto = require("@pulumi/pulumi/proto/language_pb");
const pluginProto = require("@pulumi/pulumi/proto/plugin_pb");

type Callback = (err: grpc.ServiceError | null, value?: unknown) => void;
type Call = { request: any };

function sdkVersion(): string {
  return (require("@pulumi/pulumi/package.json") as { version: string }).version;
}

class NodeLanguageHost {
  /** Programs running now; they can do nothing once the engine is gone. */
  private readonly programs = new Set<ChildProcess>();

  constructor(private engineAddress: string) {
    this.watch();
  }

  handshake(call: Call, callback: Callback): void {
    if (call.request.getEngineAddress()) {
      this.engineAddress = call.request.getEngineAddress();
      this.watch();
    }
    callback(null, new languageProto.LanguageHandshakeResponse());
  }

  /** Exits with the engine, as Pulumi's own language hosts do, ending the programs it runs. */
  private watch(): void {
    watchEngine(this.engineAddress, {
      onGone: (address) => {
        for (const program of this.programs) program.kill("SIGTERM");
        exitWithEngine(address);
      },
    });
  }

  // Plugins come from the program's packages; kindling's resources are dynamic and need none
  // besides the engine's built-in pulumi-nodejs provider.
  getRequiredPlugins(_call: Call, callback: Callback): void {
    const response = new languageProto.GetRequiredPluginsResponse();
    response.setPluginsList([]);
    callback(null, response);
  }

  getRequiredPackages(_call: Call, callback: Callback): void {
    const response = new languageProto.GetRequiredPackagesResponse();
    response.setPackagesList([]);
    callback(null, response);
  }

  getPluginInfo(_call: Call, callback: Callback): void {
    const info = new pluginProto.PluginInfo();
    info.setVersion(sdkVersion());
    callback(null, info);
  }

  about(_call: Call, callback: Callback): void {
    const response = new languageProto.AboutResponse();
    response.setExecutable(process.execPath);
    response.setVersion(process.version);
    callback(null, response);
  }

  getProgramDependencies(_call: Call, callback: Callback): void {
    const response = new languageProto.GetProgramDependenciesResponse();
    response.setDependenciesList([]);
    callback(null, response);
  }

  installDependencies(call: grpc.ServerWritableStream<unknown, unknown>): void {
    // Dependencies are installed with npm by the project, not by the engine.
    call.end();
  }

  run(call: Call, callback: Callback): void {
    const req = call.request;
    const info = req.getInfo();
    const programDir: string = info?.getProgramDirectory() || req.getPwd();
    const entry: string = info?.getEntryPoint() || req.getProgram() || ".";
    const runner = require.resolve("@pulumi/pulumi/cmd/run", { paths: [programDir] });
    const args = [runner];
    const flag = (name: string, value: string | number | undefined) => {
      if (value !== undefined && value !== "") args.push(`--${name}`, String(value));
    };
    flag("monitor", req.getMonitorAddress());
    flag("engine", this.engineAddress);
    flag("project", req.getProject());
    flag("stack", req.getStack());
    flag("pwd", req.getPwd());
    flag("organization", req.getOrganization());
    flag("root-directory", info?.getRootDirectory());
    if (req.getDryrun()) args.push("--dry-run");
    flag("parallel", req.getParallel());
    args.push(entry === "." ? programDir : join(programDir, entry), ...req.getArgsList());

    const config: Record<string, string> = {};
    for (const [key, value] of req.getConfigMap().entries()) config[key] = value;
    const child = spawn(process.execPath, args, {
      cwd: req.getPwd() || programDir,
      stdio: ["ignore", "inherit", "inherit"],
      env: {
        ...process.env,
        PULUMI_CONFIG: JSON.stringify(config),
        PULUMI_CONFIG_SECRET_KEYS: JSON.stringify(req.getConfigsecretkeysList()),
      },
    });
    this.programs.add(child);
    child.on("error", (err) => {
      this.programs.delete(child);
      callback(null, runResponse(`could not start node: ${err.message}`));
    });
    child.on("exit", (code, signal) => {
      this.programs.delete(child);
      // Exit code 32 means the program already reported its error through the engine.
      const bail = code === 32;
      const error = code === 0 || bail ? "" : `Program exited with non-zero exit code: ${code ?? signal}`;
      callback(null, runResponse(error, bail));
    });
  }
}

function runResponse(error: string, bail = false): unknown {
  const response = new languageProto.RunResponse();
  response.setError(error);
  response.setBail(bail);
  return response;
}

function main(): void {
  const host = new NodeLanguageHost(engineAddressFromArgs(process.argv.slice(2)));
  const server = new grpc.Server({ "grpc.max_receive_message_length": 400 * 1024 * 1024 });
  const impl: Record<string, unknown> = {};
  for (const method of ["handshake", "getRequiredPlugins", "getRequiredPackages", "getPluginInfo", "about", "getProgramDependencies", "installDependencies", "run"]) {
    impl[method] = (host as unknown as Record<string, (...a: unknown[]) => unknown>)[method].bind(host);
  }
  server.addService(languageGrpc.LanguageRuntimeService, impl as grpc.UntypedServiceImplementation);
  server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
    if (err) {
      process.stderr.write(`pulumi-language-nodejs: ${err.message}\n`);
      process.exit(1);
    }
    process.stdout.write(`${port}\n`);
  });
}

main();
