// A writer of an object volume in a process of its own, for crash and fencing tests. Writes
// stamped blocks (sequence number, block number, a checksum) at random places and FLUSHes every
// few writes; prints each write before it is made ("w SEQ BLOCK") and each acknowledged FLUSH
// ("acked SEQ"), unbuffered, so whoever kills it knows what was promised.
//   KINDLING_TEST_OBJECT='<backend config json>' node object-worker.js VOLUME_ID BLOCKS FIRST_SEQ [FLUSH_EVERY]
import { writeSync } from "node:fs";
import { Backend } from "../../provider/library";
import { stamp, STAMP_BLOCK } from "./stamps";

const say = (line: string) => writeSync(1, `${line}\n`);

async function main(): Promise<void> {
  const [volumeId, blocksText, firstSeq, flushEvery = "8"] = process.argv.slice(2);
  const backend = await Backend.open(JSON.parse(process.env.KINDLING_TEST_OBJECT ?? "{}"));
  const volume = await backend.getVolume(volumeId);
  const device = await volume.open();
  say("open");
  const blocks = Number(blocksText);
  for (let seq = Number(firstSeq); ; seq++) {
    const block = Math.floor(Math.random() * blocks);
    say(`w ${seq} ${block}`);
    await device.pwrite(stamp(seq, block), block * STAMP_BLOCK);
    if (seq % Number(flushEvery) === 0) {
      try {
        await device.flush();
      } catch (err) {
        say(`flush-failed ${seq} ${(err as Error).message}`);
        process.exit(3);
      }
      say(`acked ${seq}`);
    }
  }
}

main().catch((err) => {
  say(`error ${(err as Error).message}`);
  process.exit(2);
});
