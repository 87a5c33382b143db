// The implementation behind kindling's Pulumi resources. The SDK's serialized providers are
// tiny shims that `require("kindling/pulumi")` at call time, so refresh and delete of old
// state always run the code installed now.
import * as volume from "./volume";
import * as snapshot from "./snapshot";
import * as attachment from "./attachment";

export { volume, snapshot, attachment };

// When a deployment is done the engine ends the dynamic-provider process with SIGINT, and
// Node's default for SIGINT skips "exit" handlers: the rbd driver's key files (removed on exit)
// would stay on disk. In that process only, SIGINT ends it through a normal exit.
if (/[\\/]dynamic-provider([\\/]index\.js)?$/.test(process.argv[1] ?? "")) {
  process.once("SIGINT", () => process.exit(130));
}
