// The implementation behind kindling's Pulumi resources. The SDK's serialized providers are
// tiny shims that `require("kindling/pulumi")` at call time, so refresh and delete of old
// state always run the code installed now.
import * as volume from "./volume";
import * as snapshot from "./snapshot";
import * as attachment from "./attachment";
import * as image from "./image";
import { engineAddressFromArgs, watchEngine } from "./engine-watch";

export { volume, snapshot, attachment, image };

// When a deployment is done the engine ends the dynamic-provider process with SIGINT, and
// Node's default for SIGINT skips "exit" handlers: the rbd driver's key files (removed on exit)
// would stay on disk. In that process only, SIGINT ends it through a normal exit.
// Pulumi's dynamic-provider host has no health check of its own: an engine killed with -9
// would leave it running forever, so kindling watches the engine (its address is the host's
// argument) from the first call on.
if (/[\\/]dynamic-provider([\\/]index\.js)?$/.test(process.argv[1] ?? "")) {
  process.once("SIGINT", () => process.exit(130));
  watchEngine(engineAddressFromArgs(process.argv.slice(2)));
}
