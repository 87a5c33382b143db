#!/usr/bin/env bash
# Debian's nbd-server, for bench/nbd.ts as a peer: unpacked into the project's tools directory
# rather than installed, because the package's install script starts a server on every
# address's port 10809 (kindling's own default). Prints the binary's path.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$here/.tools/nbd-server"
if [ -x "$dest/bin/nbd-server" ]; then echo "$dest/bin/nbd-server"; exit 0; fi
if command -v nbd-server >/dev/null 2>&1; then command -v nbd-server; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download nbd-server >/dev/null 2>&1) || { echo "nbd-server.sh: apt-get download nbd-server failed" >&2; exit 1; }
mkdir -p "$dest"
dpkg-deb -x "$work"/nbd-server_*.deb "$work/x"
mkdir -p "$dest/bin"
cp "$work/x/bin/nbd-server" "$dest/bin/nbd-server"
echo "$dest/bin/nbd-server"
