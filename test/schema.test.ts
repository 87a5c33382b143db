// schema.json must say what the provider checks: it is generated from the zod input schemas,
// and this test fails when the committed file and the zod schemas disagree.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { attachmentInputsSchema, imageInputsSchema, snapshotInputsSchema, volumeInputsSchema } from "../provider/pulumi/inputs";
import { packageSchema } from "../provider/pulumi/schema";
import { ROOT } from "./helpers/pulumi";

const committed = JSON.parse(readFileSync(join(ROOT, "schema.json"), "utf8"));
const version = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version;

test("schema.json is what the zod schemas generate (run `make schema` after changing inputs)", () => {
  assert.deepEqual(committed, packageSchema(version));
});

test("every checked input is in schema.json, required where zod requires it, and nothing else", () => {
  const cases = [
    ["kindling:index:Volume", volumeInputsSchema],
    ["kindling:index:Snapshot", snapshotInputsSchema],
    ["kindling:index:Attachment", attachmentInputsSchema],
    ["kindling:index:Image", imageInputsSchema],
  ] as const;
  for (const [token, schema] of cases) {
    const resource = committed.resources[token];
    const keys = Object.keys(schema.shape).filter((k) => k !== "resourceName" && k !== "ownerKey");
    assert.deepEqual(Object.keys(resource.inputProperties).sort(), keys.sort(), token);
    const required = keys.filter((k) => !(schema.shape as Record<string, { safeParse(v: unknown): { success: boolean } }>)[k].safeParse(undefined).success);
    assert.deepEqual([...resource.requiredInputs].sort(), required.sort(), token);
    for (const key of keys) assert.ok(resource.properties[key], `${token} outputs carry input ${key}`);
  }
  assert.equal(committed.resources["kindling:index:Volume"].inputProperties.sizeGiB.type, "integer");
  // Optional with an image, but always an output.
  assert.ok(!committed.resources["kindling:index:Volume"].requiredInputs.includes("sizeGiB"));
  assert.ok(committed.resources["kindling:index:Volume"].required.includes("sizeGiB"));
  assert.deepEqual(committed.resources["kindling:index:Image"].inputProperties.tags, { type: "array", items: { type: "string" } });
  for (const output of ["imageId", "serviceName", "status", "sizeBytes", "checksum", "hashAlgo", "hashValue", "diskFormat", "createdAt"]) {
    assert.ok(committed.resources["kindling:index:Image"].properties[output], `Image output ${output}`);
  }
  assert.equal(committed.version, version);
});
