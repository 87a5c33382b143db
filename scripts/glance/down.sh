#!/usr/bin/env bash
# Stops the Glance up.sh started in DIR, by the pid in DIR/run, waits until it is gone, and
# removes DIR. Safe to call twice, and after the process was killed.
#   down.sh DIR          stop and remove DIR
#   down.sh --keep DIR   stop only (up.sh's own clean-up after a failure)
# SIGTERM first (glance-api finishes what it serves), SIGKILL after 10 s.
set -uo pipefail
keep=
if [ "${1:-}" = --keep ]; then keep=1; shift; fi
dir=${1:?usage: down.sh [--keep] DIR}
[ -d "$dir" ] || exit 0
dir=$(cd "$dir" && pwd -P)

# Alive: not gone, and not a zombie waiting for a reaper.
alive() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; [ "${s%% *}" != Z ]; }
# This Glance's process names its configuration in DIR/etc on its command line. After a kill
# its pid may be another process's, which is never signalled.
ours() { tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF "$dir/etc/glance-api.conf"; }

pidfile=$dir/run/glance-api.pid
if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile")
  if alive "$pid" && ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      kill -KILL "$pid" 2>/dev/null
      for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
      alive "$pid" && { echo "glance down: glance-api ($pid) of $dir survives SIGKILL" >&2; exit 1; }
    fi
  fi
fi

if [ -n "$keep" ]; then
  rm -f "$pidfile"
else
  rm -rf "$dir"
fi
