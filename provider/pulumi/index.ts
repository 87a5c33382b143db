// The implementation behind kindling's Pulumi resources. The SDK's serialized providers are
// tiny shims that `require("kindling/pulumi")` at call time, so refresh and delete of old
// state always run the code installed now.
import * as volume from "./volume";
import * as snapshot from "./snapshot";
import * as attachment from "./attachment";

export { volume, snapshot, attachment };
