#!/usr/bin/env bash
# Stops the cluster up.sh started in DIR, by the pid files it wrote, and removes DIR.
# A throwaway cluster needs no graceful shutdown: SIGKILL is instant and safe. radosgw goes
# first, and is waited out, so that it never sits retrying against an OSD or mon already gone.
set -uo pipefail
dir=${1:?usage: down.sh DIR}
[ -d "$dir/run" ] || exit 0
dir=$(cd "$dir" && pwd)

# Alive: not gone, and not a zombie waiting for a reaper.
alive() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; [ "${s%% *}" != Z ]; }
# A daemon of this cluster: every one was started with CEPH_CONF naming DIR's ceph.conf. After a
# kill its pid may be another process's, which is never signalled.
ours() { tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | grep -qxF "CEPH_CONF=$dir/ceph.conf"; }
# SIGKILL to the daemons of these pid files, then a wait (up to 5 s) until they are gone.
stop() {
  local pidfile pid killed=()
  for pidfile in "$@"; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    ours "$pid" && kill -KILL "$pid" 2>/dev/null && killed+=("$pid")
  done
  for pid in "${killed[@]}"; do
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.05; done
  done
}

rest=()
for pidfile in "$dir"/run/*.pid; do
  case $pidfile in */client.rgw.*) ;; *) rest+=("$pidfile") ;; esac
done
stop "$dir"/run/client.rgw.*.pid
stop "${rest[@]}"
rm -rf "$dir"
