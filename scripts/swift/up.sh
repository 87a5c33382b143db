#!/usr/bin/env bash
# Brings up a throwaway Swift all-in-one (Debian's swift 2.30) for tests and benchmarks: one proxy
# with tempauth, one account, one container and one object server, a directory as their one
# device, rings of one replica, and memcached for tempauth's tokens, all on 127.0.0.1 and all in
# DIR (swift.conf too: /etc/swift is not read, see run-server.py). Stop it with down.sh DIR.
#   up.sh DIR                 DIR must be missing or empty
#   SWIFT_PORT=8080           the proxy's port; the others default to the next four:
#   SWIFT_ACCOUNT_PORT, SWIFT_CONTAINER_PORT, SWIFT_OBJECT_PORT, SWIFT_MEMCACHED_PORT
# The user `test:tester` (an admin of account AUTH_test) has a generated key, kept in
# DIR/tester.key (0600) and in the proxy's configuration (0600), never on a command line.
# Every process runs as the caller, in the foreground of its own session, its pid in DIR/run.
# Prints KINDLING_SWIFT_AUTH_URL, KINDLING_SWIFT_USER and KINDLING_SWIFT_KEY_FILE assignments.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${1:?usage: up.sh DIR}
# Paths go into the servers' configuration: keep them plain.
[[ $dir =~ ^[A-Za-z0-9._/+-]+$ ]] || { echo "swift up: DIR must be a plain path (letters, digits, . _ / + -), got '$dir'" >&2; exit 1; }
port=${SWIFT_PORT:-8080}
account_port=${SWIFT_ACCOUNT_PORT:-$((port + 1))}
container_port=${SWIFT_CONTAINER_PORT:-$((port + 2))}
object_port=${SWIFT_OBJECT_PORT:-$((port + 3))}
memcached_port=${SWIFT_MEMCACHED_PORT:-$((port + 4))}
for p in "$port" "$account_port" "$container_port" "$object_port" "$memcached_port"; do
  [[ $p =~ ^[1-9][0-9]{0,4}$ ]] && [ "$p" -le 65535 ] || { echo "swift up: ports must be TCP ports, got '$p'" >&2; exit 1; }
done
python=/usr/bin/python3 # Debian's, which has the swift modules (a python3 earlier on PATH may not)
for tool in /usr/bin/swift-proxy-server /usr/bin/swift-account-server /usr/bin/swift-container-server /usr/bin/swift-object-server memcached curl "$python"; do
  command -v "$tool" >/dev/null || { echo "swift up: $tool is missing (apt-get install swift swift-proxy swift-account swift-container swift-object memcached curl)" >&2; exit 1; }
done

mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P)
if [ -n "$(ls -A "$dir")" ]; then
  echo "swift up: $dir is not empty (down.sh $dir stops and removes an old one)" >&2; exit 1
fi
mkdir -p "$dir"/{etc,srv/d1,run,log,cache}
chmod 700 "$dir"
user=$(id -un)

# On any failure: what failed, the end of the logs, and nothing left running; DIR stays for a look.
ok=
on_exit() {
  [ -n "$ok" ] && return
  "$here/down.sh" --keep "$dir" >/dev/null 2>&1
  for log in "$dir"/log/*.log; do
    [ -s "$log" ] || continue
    echo "--- the end of $log" >&2
    tail -n 20 "$log" >&2
  done
  echo "swift up: failed; nothing is left running (down.sh $dir removes its files)" >&2
}
trap on_exit EXIT

random() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# Our own swift.conf: a hash prefix and suffix of this Swift's, one storage policy.
(
  umask 077
  cat >"$dir/etc/swift.conf" <<CONF
[swift-hash]
swift_hash_path_prefix = $(random 16)
swift_hash_path_suffix = $(random 16)

[storage-policy:0]
name = kindling
default = yes

[swift-constraints]
CONF
)

# The settings every server shares. workers = 0: each server is one process, the pid recorded.
# --verbose (below) sends each log to its stderr, a file in DIR/log; without /dev/log, swift
# also sends it to syslog over UDP on 127.0.0.1, where nothing listens here.
common() {
  cat <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $1
bind_timeout = 5
workers = 0
user = $user
swift_dir = $dir/etc
devices = $dir/srv
mount_check = false
recon_cache_path = $dir/cache
log_name = $2
CONF
}
for server in account container object; do
  port_var=${server}_port
  {
    common "${!port_var}" "$server-server"
    cat <<CONF

[pipeline:main]
pipeline = healthcheck $server-server

[app:$server-server]
use = egg:swift#$server

[filter:healthcheck]
use = egg:swift#healthcheck
CONF
  } >"$dir/etc/$server-server.conf"
done

key=$(random 24)
(umask 077; printf '%s\n' "$key" >"$dir/tester.key")
(
  umask 077
  exec >"$dir/etc/proxy-server.conf"
  common "$port" proxy-server
  # reveal_sensitive_prefix = 0: the access log shows no part of any token.
  cat <<CONF

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats tempauth copy dlo slo versioned_writes proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = $key .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$memcached_port

[filter:proxy-logging]
use = egg:swift#proxy_logging
reveal_sensitive_prefix = 0

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:copy]
use = egg:swift#copy

[filter:dlo]
use = egg:swift#dlo

[filter:slo]
use = egg:swift#slo

[filter:versioned_writes]
use = egg:swift#versioned_writes
CONF
)

# The three rings in one Python process (swift-ring-builder would start Python nine times, about
# 5 s): 2^6 partitions, one replica, the one device.
"$python" - "$dir/etc" "$account_port" "$container_port" "$object_port" <<'PY' >"$dir/log/rings.log" 2>&1
import sys
from swift.common.ring import RingBuilder
etc, ports = sys.argv[1], dict(zip(("account", "container", "object"), map(int, sys.argv[2:])))
for kind, port in ports.items():
    builder = RingBuilder(6, 1, 1)
    builder.add_dev({"region": 1, "zone": 1, "ip": "127.0.0.1", "port": port, "device": "d1", "weight": 1})
    builder.rebalance()
    builder.save(f"{etc}/{kind}.builder")
    builder.get_ring().save(f"{etc}/{kind}.ring.gz")
PY

# setsid: each process in a session of its own, so the caller's terminal and process group do
# not reach it. A background job of a script is not a group leader, so setsid execs in place and
# $! is the process itself.
start() {
  local name=$1
  shift
  setsid "$@" </dev/null >>"$dir/log/$name.log" 2>&1 &
  echo "$!" >"$dir/run/$name.pid"
}
# memcached works in DIR (down.sh knows it by that); -U 0: no UDP; as root it needs a user.
memcached_user=()
[ "$(id -u)" -ne 0 ] || memcached_user=(-u "$user")
(cd "$dir" && start memcached memcached -l 127.0.0.1 -p "$memcached_port" -U 0 -m 64 "${memcached_user[@]}")
for server in account container object proxy; do
  start "$server-server" "$python" "$here/run-server.py" "$dir/etc" "/usr/bin/swift-$server-server" "$dir/etc/$server-server.conf" --verbose
done

# Alive: not gone, and not a zombie waiting for a reaper.
alive() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; [ "${s%% *}" != Z ]; }
wait_for() { # NAME, then a command that succeeds once NAME answers
  local name=$1 pid
  shift
  pid=$(cat "$dir/run/$name.pid")
  for _ in $(seq 150); do
    alive "$pid" || { echo "swift up: $name exited" >&2; exit 1; }
    "$@" && return 0
    sleep 0.2
  done
  echo "swift up: $name did not answer within 30 s" >&2
  exit 1
}
healthy() { curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$1/healthcheck"; }
memcached_answers() { printf 'version\r\nquit\r\n' | curl -s --max-time 2 "telnet://127.0.0.1:$memcached_port" 2>/dev/null | grep -q '^VERSION'; }
wait_for memcached memcached_answers
wait_for account-server healthy "$account_port"
wait_for container-server healthy "$container_port"
wait_for object-server healthy "$object_port"
wait_for proxy-server healthy "$port"

# The whole chain once: auth (the key goes to curl on stdin, as a header), then the account with
# the token, which tempauth checks against memcached, and which makes the account.
auth_url=http://127.0.0.1:$port/auth/v1.0
headers=$(printf 'X-Auth-User: test:tester\nX-Auth-Key: %s\n' "$key" | curl -fs --max-time 10 -D - -o /dev/null -H @- "$auth_url") ||
  { echo "swift up: test:tester could not authenticate at $auth_url" >&2; exit 1; }
token=$(sed -n 's/^X-Auth-Token: \([^[:space:]]*\).*/\1/ip' <<<"$headers")
storage_url=$(sed -n 's/^X-Storage-Url: \([^[:space:]]*\).*/\1/ip' <<<"$headers")
[ -n "$token" ] && [ -n "$storage_url" ] || { echo "swift up: auth at $auth_url gave no token or storage URL" >&2; exit 1; }
printf 'X-Auth-Token: %s\n' "$token" | curl -fs --max-time 10 -o /dev/null -X PUT -H @- "$storage_url/kindling-warm-up" &&
  printf 'X-Auth-Token: %s\n' "$token" | curl -fs --max-time 10 -o /dev/null -X DELETE -H @- "$storage_url/kindling-warm-up" ||
  { echo "swift up: a container could not be made and removed in $storage_url" >&2; exit 1; }

ok=1
echo "KINDLING_SWIFT_AUTH_URL=$auth_url"
echo "KINDLING_SWIFT_USER=test:tester"
echo "KINDLING_SWIFT_KEY_FILE=$dir/tester.key"
