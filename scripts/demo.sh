#!/usr/bin/env bash
# `make demo`: `pulumi up` of examples/basic on the embedded default backend (the file backend
# the kindling command uses), with local Pulumi state; `make demo-down` (this script with
# `down`) destroys it again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/examples/basic"
pulumi() { "$root/bin/pulumi" "$@"; }

mkdir -p .pulumi-state
export PULUMI_BACKEND_URL="${PULUMI_BACKEND_URL:-file://$PWD/.pulumi-state?metadata=skip}"
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE:-kindling-demo}"

if [ "${1:-}" = "down" ]; then
  if pulumi stack select demo 2>/dev/null; then
    pulumi destroy --yes --skip-preview
    pulumi stack rm demo --yes
  fi
  echo "demo: torn down"
  exit 0
fi

pulumi stack select demo 2>/dev/null || pulumi stack init demo --secrets-provider passphrase
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: not root, so no loop device: the attachment records a connection without attaching" >&2
  pulumi config set attachLocally false
fi
pulumi up --yes --skip-preview
printf '\n== stack outputs\n'
pulumi stack output --json
printf '\n== the same volumes, as the kindling command sees them\n'
"$root/bin/kindling" volume list
printf '\nTear it down with: make demo-down\n'
