#!/usr/bin/env bash
# Stops a throwaway database server that scripts/<kind>/up.sh started in DIR, by the pid in
# DIR/server.pid, waits until every process of it is gone, and removes DIR. Safe to call twice,
# and after the server was killed. Called by scripts/postgres/down.sh and scripts/mariadb/down.sh:
#   stop-server.sh NAME SIGNAL DIR          stop with SIGNAL (then SIGKILL after 30 s), remove DIR
#   stop-server.sh NAME SIGNAL --keep DIR   stop only, keeping the data for `up.sh --again DIR`
set -uo pipefail

name=${1:?usage: stop-server.sh NAME SIGNAL [--keep] DIR}
signal=${2:?usage: stop-server.sh NAME SIGNAL [--keep] DIR}
shift 2
keep=
if [ "${1:-}" = --keep ]; then keep=1; shift; fi
dir=${1:?usage: $name down.sh [--keep] DIR}
[ -d "$dir" ] || exit 0
dir=$(cd "$dir" && pwd -P)

# The server's processes are those working in its data directory (PostgreSQL's postmaster and
# children, each child a session of its own that outlives a killed postmaster for a moment;
# mariadbd's one process). Found by their cwd, a pid another process took after a kill is never
# signalled.
processes() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/cwd" 2>/dev/null)" = "$dir/data" ] && echo "${p#/proc/}"
  done
}
gone_within() { # tenths of a second
  local _
  for _ in $(seq "$1"); do [ -z "$(processes)" ] && return 0; sleep 0.1; done
  [ -z "$(processes)" ]
}

if [ -f "$dir/server.pid" ]; then
  pid=$(cat "$dir/server.pid")
  # Only when that pid still works in this data directory: after a kill it may be another's.
  [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$dir/data" ] && kill "-$signal" "$pid" 2>/dev/null
fi
if ! gone_within 300; then
  for p in $(processes); do kill -KILL "$p" 2>/dev/null; done
  gone_within 100 || { echo "$name down: processes of $dir survive SIGKILL: $(processes | tr '\n' ' ')" >&2; exit 1; }
fi

if [ -n "$keep" ]; then
  rm -f "$dir/server.pid"
elif mountpoint -q "$dir"; then
  # A filesystem mounted for the server (full-disk tests): empty it, leave the mount point.
  find "$dir" -mindepth 1 -maxdepth 1 ! -name lost+found -exec rm -rf {} +
else
  rm -rf "$dir"
fi
