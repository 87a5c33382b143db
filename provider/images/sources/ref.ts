import { InvalidInputError } from "../../util/errors";

// An image reference as users write it: `SERVICE:NAME_OR_ID` for a configured image service
// (`glance:ubuntu-24.04`), `file:PATH`, or an http(s) URL. The service names come from the
// configuration, so a service may be called anything but `file`, `http` or `https`.

export type ImageRef =
  | { kind: "service"; service: string; image: string }
  | { kind: "file"; path: string }
  | { kind: "url"; url: string };

export const RESERVED_SERVICE_NAMES = new Set(["file", "http", "https"]);

export function parseImageRef(text: string, services: readonly string[], field = "image"): ImageRef {
  const forms = `file:PATH, an http(s) URL${services.length ? `, or ${services.map((s) => `${s}:NAME_OR_ID`).join(", ")}` : ""}`;
  const colon = text.indexOf(":");
  if (colon <= 0) throw new InvalidInputError(field, `${JSON.stringify(text.slice(0, 200))} is not an image reference; write ${forms}`);
  const scheme = text.slice(0, colon);
  const rest = text.slice(colon + 1);
  if (scheme === "http" || scheme === "https") return { kind: "url", url: text };
  if (scheme === "file") {
    if (!rest) throw new InvalidInputError(field, "file: needs a path");
    return { kind: "file", path: rest };
  }
  if (services.includes(scheme)) {
    if (!rest.trim()) throw new InvalidInputError(field, `${scheme}: needs an image name or id`);
    return { kind: "service", service: scheme, image: rest };
  }
  throw new InvalidInputError(field, `no image service ${JSON.stringify(scheme)} is configured; write ${forms}`);
}
