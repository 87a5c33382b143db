// The randomized multi-process soak (see helpers/soak.ts): random operations from several
// processes on one backend, random kill -9s, then every record checked against the storage and
// every acknowledged write looked for. Short here; `make soak` runs it for five minutes.
// KINDLING_SOAK_SECONDS sets the length, KINDLING_SOAK_SEED replays a run.
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import { test } from "node:test";
import { soak } from "./helpers/soak";

const seconds = Number(process.env.KINDLING_SOAK_SECONDS ?? 20);
const seed = process.env.KINDLING_SOAK_SEED ? Number(process.env.KINDLING_SOAK_SEED) : randomInt(2 ** 31);

test(`soak: ${seconds} s of random operations from 3 processes with random kill -9s`, { timeout: (seconds + 240) * 1000 }, async (t) => {
  t.diagnostic(`seed ${seed} (KINDLING_SOAK_SEED=${seed} replays it)`);
  const result = await soak({ seconds, seed });
  const replay = ` (seed ${seed})`;
  assert.ok(result.kills > 3, `processes were killed${replay}`);
  assert.ok(result.acknowledged > 0, `writes were acknowledged${replay}`);
  assert.deepEqual(result.unexpected, [], `no worker met an error a racing user should never see${replay}`);
  assert.deepEqual(result.problems, [], `records equal the storage, every device accounted for${replay}`);
  assert.deepEqual(result.lost, [], `no acknowledged write was lost${replay}`);
  t.diagnostic(`${result.kills} kills, ${result.acknowledged} acknowledged writes checked`);
});
