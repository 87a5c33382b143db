#!/usr/bin/env bash
# Finds or builds the Pulumi engine (the `pulumi` CLI) and prints the directory that holds it.
# 1. a `pulumi` on PATH at least as new as the pinned release;
# 2. else the cache, ${XDG_CACHE_HOME:-~/.cache}/kindling/engine/<version>/bin, linked into .tools/engine;
# 3. else build it there from the Go module proxy with the machine's Go (scripts/engine/go.mod
#    pins the release), into a temp dir first so an interrupted build never leaves half a cache.
set -euo pipefail

here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
root=$(cd "$here/.." && pwd)
version=$(sed -n "s#^\s*github.com/pulumi/pulumi/pkg/v3 \(v[0-9.]*\).*#\1#p" "$here/engine/go.mod")
cache="${XDG_CACHE_HOME:-$HOME/.cache}/kindling/engine/$version/bin"

# `sort -V` orders versions; the first of the two is the older.
at_least() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]; }

ambient=$(command -v pulumi 2>/dev/null || true)
if [ -n "$ambient" ] && [ "$(readlink -f "$ambient")" != "$root/bin/pulumi" ]; then
  have=$("$ambient" version 2>/dev/null | tr -d v || true)
  if [ -n "$have" ] && at_least "$have" "${version#v}"; then dirname "$ambient"; exit 0; fi
fi

# The engine looks for its language and provider plugins beside its own binary first, so the
# project's engine directory holds a hard link to the cached binary and kindling's plugins.
assemble() {
  local dir="$root/.tools/engine"
  mkdir -p "$dir"
  if ! [ "$dir/pulumi" -ef "$cache/pulumi" ]; then
    ln -f "$cache/pulumi" "$dir/pulumi" 2>/dev/null || cp "$cache/pulumi" "$dir/pulumi"
  fi
  ln -sfn "$root/scripts/engine/pulumi-language-nodejs" "$dir/pulumi-language-nodejs"
  ln -sfn "$root/node_modules/@pulumi/pulumi/pulumi-resource-pulumi-nodejs" "$dir/pulumi-resource-pulumi-nodejs"
  echo "$dir"
}

if [ -x "$cache/pulumi" ]; then assemble; exit 0; fi

go=$(command -v go 2>/dev/null || true)
[ -z "$go" ] && [ -x /usr/local/go/bin/go ] && go=/usr/local/go/bin/go
if [ -z "$go" ]; then
  cat >&2 <<MSG
engine: no pulumi $version or newer on PATH, and no Go to build it.
Install one of them:
  - Go (Debian: apt-get install golang-go, needs Go >= 1.26; or https://go.dev/dl), then rerun make engine;
  - the pulumi CLI (https://www.pulumi.com/docs/iac/download-install/), then put it on PATH.
MSG
  exit 1
fi

echo "engine: building pulumi $version from Go modules (once; cached in $cache)" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/engine/go.mod" "$here/engine/go.sum" "$work/"
(
  cd "$work"
  export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
  # Flags as Pulumi's own release build uses them.
  "$go" build -trimpath -tags osusergo,grpcnotrace \
    -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$version" \
    -o "$work/bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
)
mkdir -p "$(dirname "$cache")"
rm -rf "$cache.tmp" && mv "$work/bin" "$cache.tmp" && rm -rf "$cache" && mv "$cache.tmp" "$cache"
assemble
