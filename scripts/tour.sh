#!/usr/bin/env bash
# `make tour`: a tour of the embedded default (one file backend, SQLite beside it) through the
# kindling command: create, attach, write, snapshot, clone, restore, check, clean up.
set -euo pipefail
cd "$(dirname "$0")/.."
k() { bin/kindling "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: local attach uses loop devices (losetup), which needs root; run make demo as root" >&2
  exit 1
fi

names=(demo-restored demo-clone demo-volume)
cleanup() {
  for v in "${names[@]}"; do k detach "$v" >/dev/null 2>&1 || true; done
  k snapshot delete demo-snapshot >/dev/null 2>&1 || true
  for v in "${names[@]}"; do k volume delete "$v" >/dev/null 2>&1 || true; done
}
cleanup # a demo interrupted earlier may have left its volumes
trap cleanup EXIT

# Writes a line at the start of a volume through a local attachment.
write_line() {
  local device
  device=$(k attach "$1")
  printf '%-64s' "$2" | dd of="$device" bs=64 count=1 conv=notrunc,fsync status=none
  k detach "$1" >/dev/null
}
read_line() {
  local device text
  device=$(k attach "$1" --read-only)
  text=$(dd if="$device" bs=64 count=1 status=none | tr -d '\0' | sed 's/ *$//')
  k detach "$1" >/dev/null
  printf '%s' "$text"
}

say "backends (embedded default: no --config, no \$KINDLING_CONFIG, no ./kindling.json)"
k backends
say "stats"
k stats --refresh

say "create a 1 GiB volume and attach it on this host"
k volume create demo-volume --size 1 --meta purpose=demo
device=$(k attach demo-volume)
echo "attached at $device ($(lsblk -bno SIZE "$device") bytes)"
k detach demo-volume
write_line demo-volume "written before the snapshot"

say "snapshot it, then overwrite the volume"
k snapshot create demo-volume demo-snapshot
write_line demo-volume "written after the snapshot"

say "clone the volume, and make a 2 GiB volume from the snapshot"
k volume clone demo-volume demo-clone
k volume create demo-restored --size 2 --from-snapshot demo-snapshot
k volume list

say "what each one holds"
ok=true
check() {
  local got; got=$(read_line "$1")
  printf '%-14s %-30s' "$1" "\"$got\""
  if [ "$got" = "$2" ]; then echo "ok"; else echo "EXPECTED \"$2\""; ok=false; fi
}
check demo-volume "written after the snapshot"
check demo-clone "written after the snapshot"
check demo-restored "written before the snapshot"
k volume show demo-restored

say "clean up"
cleanup
trap - EXIT
k volume list
$ok && echo "demo: every volume held what it should" || { echo "demo: a volume held the wrong data" >&2; exit 1; }
