#!/usr/bin/env bash
# Stops the cluster up.sh started in DIR, by the pid files it wrote, and removes DIR.
# A throwaway cluster needs no graceful shutdown: SIGKILL is instant and safe.
set -uo pipefail
dir=${1:?usage: down.sh DIR}
[ -d "$dir/run" ] || exit 0
for pidfile in "$dir"/run/*.pid; do
  [ -f "$pidfile" ] && kill -KILL "$(cat "$pidfile")" 2>/dev/null
done
rm -rf "$dir"
