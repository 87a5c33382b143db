// Every import points down the layer list (DESIGN.md, "The layers"): a folder of provider/ may
// import itself and the folders listed below it, never one listed above. This test reads the
// sources (not the build), so a type-only import counts too: it still ties the layers together.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { test } from "node:test";
import ts from "typescript";

const ROOT = resolve(__dirname, "..", "..");
const PROVIDER = join(ROOT, "provider");

/**
 * Top first. sdk/ (outside provider/) is the top of the list. nbd/ is the NBD protocol engine
 * (handshake, transmission, the server of BlockDevices): DESIGN.md puts it "below the library";
 * it needs only the drivers' BlockDevice and util/, so it sits just above the drivers.
 */
const LAYERS = ["sdk", "pulumi", "cli", "serve", "library", "images", "attach", "persistence", "nbd", "drivers", "util"];

/** One import of one file, with the line it is on (1-based), for the failure message. */
interface Import {
  specifier: string;
  line: number;
}

/** Every module an import, export-from, import = require, import() or require() names. */
function importsOf(fileName: string, text: string): Import[] {
  const source = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true);
  const found: Import[] = [];
  const add = (node: ts.Node, specifier: ts.Expression | undefined) => {
    if (specifier && ts.isStringLiteralLike(specifier)) {
      found.push({ specifier: specifier.text, line: source.getLineAndCharacterOfPosition(node.getStart()).line + 1 });
    }
  };
  const visit = (node: ts.Node) => {
    if (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) add(node, node.moduleSpecifier);
    else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) add(node, node.moduleReference.expression);
    else if (ts.isCallExpression(node)) {
      const callee = node.expression;
      if (callee.kind === ts.SyntaxKind.ImportKeyword || (ts.isIdentifier(callee) && callee.text === "require")) add(node, node.arguments[0]);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) add(node, node.argument.literal);
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

/** The layer a path (relative to the root) is in, or undefined outside them (package.json, node_modules). */
function layerOf(path: string): string | undefined {
  const parts = path.split(sep);
  if (parts[0] === "sdk") return "sdk";
  if (parts[0] === "provider" && parts.length > 2) return parts[1];
  return undefined;
}

/** Upward imports in one file's text, as readable lines; `path` is relative to the root. */
function upwardImports(path: string, text: string): string[] {
  const from = layerOf(path);
  const problems: string[] = [];
  if (!from || !LAYERS.includes(from)) return [`${path}: folder ${from ?? "(none)"} is not in the layer list; add it where it belongs`];
  for (const { specifier, line } of importsOf(path, text)) {
    if (!specifier.startsWith(".")) continue; // packages and node: builtins are outside the layers
    const to = layerOf(relative(ROOT, resolve(ROOT, dirname(path), specifier)));
    if (!to || to === from) continue;
    if (!LAYERS.includes(to)) problems.push(`${path}:${line} imports "${specifier}" from ${to}/, which is not in the layer list`);
    else if (LAYERS.indexOf(to) < LAYERS.indexOf(from)) problems.push(`${path}:${line} imports "${specifier}": ${from}/ imports ${to}/, which is above it`);
  }
  return problems;
}

function sourcesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((name) => name.endsWith(".ts"))
    .map((name) => join(dir, name));
}

test("no file under provider/ imports a folder above its own in the layer list", () => {
  const files = sourcesUnder(PROVIDER);
  // Guards against reading nothing (a wrong root would pass vacuously).
  assert.ok(files.length > 50, `found ${files.length} .ts files under provider/`);
  const problems = files.flatMap((file) => upwardImports(relative(ROOT, file), readFileSync(file, "utf8")));
  assert.deepEqual(problems, [], `imports that point up the layer list:\n${problems.join("\n")}`);
});

test("the check sees the imports the library really has (down into attach/, nbd engine from serve/)", () => {
  // If the parser missed imports, the test above would pass on any tree: these are known edges.
  const connection = importsOf("connection.ts", readFileSync(join(PROVIDER, "library", "connection.ts"), "utf8"));
  assert.ok(connection.some((i) => i.specifier === "../attach"), "library/connection.ts imports ../attach");
  const daemon = importsOf("daemon.ts", readFileSync(join(PROVIDER, "serve", "nbd", "daemon.ts"), "utf8"));
  assert.ok(daemon.some((i) => i.specifier === "../../nbd/server"), "serve/nbd/daemon.ts imports the engine's server");
});

test("an upward import is reported with its file, line and import, in every form an import takes", () => {
  const text = [
    'import type { Backend } from "../library/backend";', // attach -> library: up
    'import { loop } from "./loop";', // itself
    'import { run } from "../util/run";', // down
    'export { ExportDaemon } from "../serve/nbd/daemon";', // up
    'const lazy = () => import("../cli/main");', // up
    'const cfg = require("../pulumi/schema");', // up
    'type T = import("../sdk-is-not-this/x").T;', // a folder not in the list
  ].join("\n");
  assert.deepEqual(upwardImports(join("provider", "attach", "example.ts"), text), [
    `${join("provider", "attach", "example.ts")}:1 imports "../library/backend": attach/ imports library/, which is above it`,
    `${join("provider", "attach", "example.ts")}:4 imports "../serve/nbd/daemon": attach/ imports serve/, which is above it`,
    `${join("provider", "attach", "example.ts")}:5 imports "../cli/main": attach/ imports cli/, which is above it`,
    `${join("provider", "attach", "example.ts")}:6 imports "../pulumi/schema": attach/ imports pulumi/, which is above it`,
    `${join("provider", "attach", "example.ts")}:7 imports "../sdk-is-not-this/x" from sdk-is-not-this/, which is not in the layer list`,
  ]);
  assert.deepEqual(upwardImports(join("provider", "exports", "nbd", "daemon.ts"), ""), [
    `${join("provider", "exports", "nbd", "daemon.ts")}: folder exports is not in the layer list; add it where it belongs`,
  ]);
});
