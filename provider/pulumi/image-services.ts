import { loadConfig } from "../library/config";
import { openImageServices, type ImageServiceSet } from "../library/images";

// The image services of kindling's configuration file ($KINDLING_CONFIG, else kindling.json in
// the Pulumi project's directory, where the provider runs), as the command finds them. Their
// endpoints and credentials (a token) stay in that file: they never pass through the program's
// inputs, so nothing of them reaches the state.
//
// One set per distinct configuration in the provider process: every image resource of a
// deployment shares its kept-alive connections, and an edited file is read again.
const open = new Map<string, ImageServiceSet>();

export function imageServices(): ImageServiceSet {
  const loaded = loadConfig();
  const key = JSON.stringify([loaded.source, loaded.baseDir, loaded.config.imageServices ?? {}]);
  let set = open.get(key);
  if (!set) {
    set = openImageServices(loaded);
    open.set(key, set);
  }
  return set;
}
