#!/usr/bin/env bash
# Stops the Swift all-in-one up.sh started in DIR, by the pids in DIR/run, waits until every
# process is gone, and removes DIR. Safe to call twice, and after a process was killed.
#   down.sh DIR          stop and remove DIR
#   down.sh --keep DIR   stop only (up.sh's own clean-up after a failure)
# SIGTERM first (SIGKILL after 10 s): the proxy, so no new request comes in, then the account,
# container and object servers, then memcached.
set -uo pipefail
keep=
if [ "${1:-}" = --keep ]; then keep=1; shift; fi
dir=${1:?usage: down.sh [--keep] DIR}
[ -d "$dir" ] || exit 0
dir=$(cd "$dir" && pwd -P)

# Alive: not gone, and not a zombie waiting for a reaper.
alive() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; [ "${s%% *}" != Z ]; }
# This Swift's process: a server names its configuration in DIR/etc on its command line,
# memcached works in DIR. After a kill its pid may be another process's, never signalled.
ours() {
  tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -q "^$dir/etc/" ||
    [ "$(readlink "/proc/$1/cwd" 2>/dev/null)" = "$dir" ]
}

pids=()
for name in proxy-server account-server container-server object-server memcached; do
  [ -f "$dir/run/$name.pid" ] || continue
  pid=$(cat "$dir/run/$name.pid")
  if alive "$pid" && ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null
    pids+=("$pid")
  fi
done
left() { local p; for p in "${pids[@]}"; do alive "$p" && echo "$p"; done; }
for _ in $(seq 100); do [ -z "$(left)" ] && break; sleep 0.1; done
if [ -n "$(left)" ]; then
  for p in $(left); do kill -KILL "$p" 2>/dev/null; done
  for _ in $(seq 50); do [ -z "$(left)" ] && break; sleep 0.1; done
  [ -z "$(left)" ] || { echo "swift down: processes of $dir survive SIGKILL: $(left | tr '\n' ' ')" >&2; exit 1; }
fi

if [ -n "$keep" ]; then
  rm -f "$dir"/run/*.pid
else
  rm -rf "$dir"
fi
