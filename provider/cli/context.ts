import type { Backend } from "../library/backend";
import type { BackendSet, LoadedConfig } from "../library/config";
import type { ImageServiceSet } from "../library/images";
import { InvalidInputError } from "../util/errors";
import type { Output } from "./output";

/** The options every command may see; parseArgs fills them. */
export interface Values {
  config?: string;
  backend?: string;
  json?: boolean;
  refresh?: boolean;
  size?: string;
  pool?: string;
  "from-snapshot"?: string;
  "from-volume"?: string;
  "show-secrets"?: boolean;
  spec?: string[];
  qos?: string[];
  meta?: string[];
  description?: string;
  "read-only"?: boolean;
  protocol?: string;
  connector?: string;
  mode?: string;
  listen?: string;
  "tls-cert"?: string;
  "tls-key"?: string;
  "tls-psk"?: string;
  "tls-ca"?: string;
  advertise?: string;
  format?: string;
  target?: string;
  snapshot?: string;
  force?: boolean;
  service?: string;
  image?: string;
  sha256?: string;
  sha512?: string;
  "allow-unverified"?: boolean;
  "no-cache"?: boolean;
  pin?: boolean;
  all?: boolean;
  file?: string;
  url?: string;
  "disk-format"?: string;
  compress?: boolean;
}

export interface Context {
  loaded: LoadedConfig;
  backends: BackendSet;
  /** The backend --backend names, or the only one. */
  backend(): Backend;
  /** The configured image services (built when first asked for). */
  images(): ImageServiceSet;
  values: Values;
  /** Positional arguments after the command words. */
  args: string[];
  out: Output;
}

/** The n-th positional argument, required. */
export function arg(ctx: Context, index: number, name: string): string {
  const value = ctx.args[index];
  if (value === undefined) throw new InvalidInputError(name, "is required");
  return value;
}
