#!/usr/bin/env bash
# Finds or builds the Pulumi engine (the `pulumi` CLI) and prints the directory that holds it as
# the last line of stdout; everything else goes to stderr. Idempotent: it builds only when needed.
# 1. a `pulumi` on PATH at least as new as the pinned release, with its Node language host;
# 2. else the cache, ${XDG_CACHE_HOME:-~/.cache}/kindling/engine/<version>/bin, linked into
#    .tools/engine together with kindling's language host and the dynamic-provider plugin;
# 3. else build it there from the Go module proxy with the machine's Go (scripts/engine/go.mod
#    pins the release), into a temp dir first so an interrupted build never leaves half a cache.
set -euo pipefail

here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
root=$(cd "$here/.." && pwd)
version=$(sed -n 's#^\s*github.com/pulumi/pulumi/pkg/v3 \(v[0-9][0-9.]*\).*#\1#p' "$here/engine/go.mod")
[ -n "$version" ] || { echo "engine: no github.com/pulumi/pulumi/pkg/v3 version in $here/engine/go.mod" >&2; exit 1; }
cache="${XDG_CACHE_HOME:-$HOME/.cache}/kindling/engine/$version/bin"

# `sort -V` orders versions; true when $1 >= $2.
at_least() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]; }

# 1. An installed engine. bin/pulumi itself may be on PATH; skip it, it would call us back.
ambient=$(command -v pulumi 2>/dev/null || true)
if [ -n "$ambient" ] && [ "$(readlink -f "$ambient")" != "$root/bin/pulumi" ]; then
  # The timeout guards against shims (npm's `pulumi` package) that try to download on first run.
  have=$(timeout 30 "$ambient" version 2>/dev/null | tail -n1 | tr -d 'v' || true)
  dir=$(dirname "$ambient")
  if [ -n "$have" ] && at_least "$have" "${version#v}" &&
     { [ -x "$dir/pulumi-language-nodejs" ] || command -v pulumi-language-nodejs >/dev/null; }; then
    echo "$dir"
    exit 0
  fi
fi

# The engine looks for its language and provider plugins beside its own binary first, so the
# checkout's engine directory holds a hard link to the cached binary plus kindling's plugins.
# Kindling's language host lives in this checkout (the Go module of Pulumi's own host is not
# served by the module proxy), which is why the shared cache holds only `pulumi` itself.
assemble() {
  local dir="$root/.tools/engine"
  local plugin="$root/node_modules/@pulumi/pulumi/pulumi-resource-pulumi-nodejs"
  mkdir -p "$dir"
  if ! [ "$dir/pulumi" -ef "$cache/pulumi" ]; then
    # Hard link: no copy of 120 MB per checkout; a copy when the cache is on another disk.
    rm -f "$dir/pulumi.new"
    ln "$cache/pulumi" "$dir/pulumi.new" 2>/dev/null || cp "$cache/pulumi" "$dir/pulumi.new"
    mv -f "$dir/pulumi.new" "$dir/pulumi"
  fi
  ln -sfn "$root/scripts/engine/pulumi-language-nodejs" "$dir/pulumi-language-nodejs"
  # Without it the engine would try to download the plugin. node_modules comes with `make
  # modules`; until then bin/pulumi finds no plugin, and a dangling link would only confuse.
  if [ -e "$plugin" ]; then
    ln -sfn "$plugin" "$dir/pulumi-resource-pulumi-nodejs"
  else
    rm -f "$dir/pulumi-resource-pulumi-nodejs"
  fi
  echo "$dir"
}

# 2. The cache.
if [ -x "$cache/pulumi" ]; then assemble; exit 0; fi

# 3. Build, with the first Go new enough for go.mod: the one on PATH, else the standard
# install location (a distribution's older Go may come first on PATH).
need=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$here/engine/go.mod")
go="" have=""
for candidate in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go; do
  if [ -z "$candidate" ] || ! [ -x "$candidate" ]; then continue; fi
  v=$("$candidate" env GOVERSION 2>/dev/null | sed 's/^go//; s/[^0-9.].*//' || true)
  go=$candidate have=$v
  if [ -n "$v" ] && at_least "$v" "$need"; then break; fi
done
if [ -z "$go" ] || [ -z "$have" ] || ! at_least "$have" "$need"; then
  {
    if [ -z "$go" ]; then
      echo "engine: no pulumi $version (or newer) on PATH, and no Go to build it."
    else
      echo "engine: no pulumi $version (or newer) on PATH, and $go is go${have:-?}; building it needs Go >= $need."
    fi
    cat <<MSG
Install one of them, then rerun \`make engine\`:
  - Go >= $need: https://go.dev/dl (unpack to /usr/local/go), or your distribution's package
    (Debian: apt-get install golang-go; check \`go version\`, Debian's is often older);
  - the pulumi CLI >= ${version#v} with its Node language host, on PATH:
    https://www.pulumi.com/docs/iac/download-install/
MSG
  } >&2
  exit 1
fi

mkdir -p "$(dirname "$cache")"
# One build at a time per cache: a second `make` waits and then finds the cache filled.
if command -v flock >/dev/null; then
  exec 9>"$(dirname "$cache")/.lock"
  flock 9
  if [ -x "$cache/pulumi" ]; then assemble; exit 0; fi
  # With the lock held, a leftover build dir belongs to a build that was killed.
  rm -rf "$(dirname "$cache")"/.build.*
fi

echo "engine: building pulumi $version from Go modules with go$have (once; takes minutes; cached in $cache)" >&2
# The build dir sits beside the cache so the final rename is atomic (same file system). A
# killed build leaves only such a dir behind, never a partial cache.
work=$(mktemp -d "$(dirname "$cache")/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Ctrl-C reaches go too; exiting through the EXIT trap removes the build dir. (After a kill
# -TERM or -9 the next build removes it instead.)
trap 'exit 130' INT HUP
mkdir "$work/mod" "$work/bin"
cp "$here/engine/go.mod" "$here/engine/go.sum" "$work/mod/"
started=$SECONDS
(
  cd "$work/mod"
  # -mod=mod: go.sum is checked in, module downloads are allowed; local: never fetch a toolchain;
  # no cgo: a static binary that needs no C compiler. GOMODCACHE/GOCACHE stay at Go's defaults
  # so a rebuild (a new pin) reuses them.
  export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
  # Flags, tags and version stamp as Pulumi's own release build (.goreleaser.yml) uses them.
  "$go" build -trimpath -tags osusergo,grpcnotrace \
    -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$version" \
    -o "$work/bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
)
"$work/bin/pulumi" version >/dev/null
rm -rf "$cache"
mv -T "$work/bin" "$cache"
echo "engine: built pulumi $version in $((SECONDS - started))s" >&2
assemble
