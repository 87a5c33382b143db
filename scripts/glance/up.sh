#!/usr/bin/env bash
# Brings up a throwaway Glance v2 image service (Debian's glance-api 25, zed) for tests and
# benchmarks: no Keystone, the `noauth` paste pipeline (glance's own functional tests use it)
# that trusts the X-Identity-Status, X-Project-Id, X-User-Id and X-Roles headers, an sqlite
# database, the file store (or the rbd store of a given Ceph cluster), all on 127.0.0.1:PORT and
# all in DIR (configuration, data, staging, locks, logs); /etc/glance is only copied from. Stop
# it with down.sh DIR.
#   up.sh DIR PORT            DIR must be missing or empty
#   GLANCE_IMAGE_SIZE_CAP=N   the largest image in bytes (Glance's image_size_cap, default 1 TiB)
#   GLANCE_RBD_CONF=F GLANCE_RBD_KEYRING=K GLANCE_RBD_USER=U GLANCE_RBD_POOL=P
#                             the rbd store instead of the file store: images in Ceph pool P as
#                             client.U (its key in keyring K) of the cluster of ceph.conf F; all
#                             four or none. F's monitors and fsid, and K, are copied into DIR.
# One process (workers = 0), in the foreground of its own session, its pid in DIR/run/glance-api.pid.
# Direct URLs and locations are shown (show_image_direct_url, show_multiple_locations), so a
# client's location handling can be tested. Prints KINDLING_GLANCE_ENDPOINT.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${1:?usage: up.sh DIR PORT}
port=${2:?usage: up.sh DIR PORT}
# Paths go into the server's configuration: keep them plain.
[[ $dir =~ ^[A-Za-z0-9._/+-]+$ ]] || { echo "glance up: DIR must be a plain path (letters, digits, . _ / + -), got '$dir'" >&2; exit 1; }
[[ $port =~ ^[1-9][0-9]{0,4}$ ]] && [ "$port" -le 65535 ] || { echo "glance up: PORT must be a TCP port, got '$port'" >&2; exit 1; }
size_cap=${GLANCE_IMAGE_SIZE_CAP:-1099511627776}
[[ $size_cap =~ ^[1-9][0-9]{0,15}$ ]] || { echo "glance up: GLANCE_IMAGE_SIZE_CAP must be a number of bytes, got '$size_cap'" >&2; exit 1; }
rbd_vars=(GLANCE_RBD_CONF GLANCE_RBD_KEYRING GLANCE_RBD_USER GLANCE_RBD_POOL)
rbd_given=0
for v in "${rbd_vars[@]}"; do [ -n "${!v:-}" ] && rbd_given=$((rbd_given + 1)); done
case $rbd_given in
  0) store=file ;;
  4) store=rbd ;;
  *) echo "glance up: the rbd store needs all of ${rbd_vars[*]}, or none of them for the file store" >&2; exit 1 ;;
esac
if [ "$store" = rbd ]; then
  # They go into the server's configuration as they are: plain names and paths only.
  [[ $GLANCE_RBD_USER =~ ^[A-Za-z0-9._-]+$ ]] || { echo "glance up: GLANCE_RBD_USER must be a plain name, got '$GLANCE_RBD_USER'" >&2; exit 1; }
  [[ $GLANCE_RBD_POOL =~ ^[A-Za-z0-9._-]+$ ]] || { echo "glance up: GLANCE_RBD_POOL must be a plain name, got '$GLANCE_RBD_POOL'" >&2; exit 1; }
  for f in "$GLANCE_RBD_CONF" "$GLANCE_RBD_KEYRING"; do
    [ -r "$f" ] || { echo "glance up: $f is not readable" >&2; exit 1; }
  done
  # glance_store's rbd driver runs in glance-api's own python (Debian's /usr/bin/python3).
  /usr/bin/python3 -c 'import rados, rbd' 2>/dev/null || { echo "glance up: the rbd store needs python3-rbd and python3-rados (apt-get install python3-rbd)" >&2; exit 1; }
fi
paste=/etc/glance/glance-api-paste.ini
for tool in /usr/bin/glance-api /usr/bin/glance-manage curl; do
  command -v "$tool" >/dev/null || { echo "glance up: $tool is missing (apt-get install --no-install-recommends glance-api python3-glance-store curl)" >&2; exit 1; }
done
[ -r "$paste" ] || { echo "glance up: $paste is missing (it comes with glance-api)" >&2; exit 1; }

mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P)
if [ -n "$(ls -A "$dir")" ]; then
  echo "glance up: $dir is not empty (down.sh $dir stops and removes an old one)" >&2; exit 1
fi
mkdir -p "$dir"/{etc,images,staging,cache,locks,run,log}
chmod 700 "$dir"

# On any failure: what failed, the end of the logs, and nothing left running; DIR stays for a look.
ok=
on_exit() {
  [ -n "$ok" ] && return
  "$here/down.sh" --keep "$dir" >/dev/null 2>&1
  for log in "$dir"/log/*; do
    [ -s "$log" ] || continue
    echo "--- the end of $log" >&2
    tail -n 20 "$log" >&2
  done
  echo "glance up: failed; nothing is left running (down.sh $dir removes its files)" >&2
}
trap on_exit EXIT

# The rbd store reads a ceph.conf of its own in DIR: the cluster's monitors and fsid only (the
# cluster's conf may name run, log and socket paths of its daemons), and a copy of the keyring.
if [ "$store" = rbd ]; then
  install -m 600 "$GLANCE_RBD_KEYRING" "$dir/etc/ceph.keyring"
  {
    echo "[global]"
    grep -E '^[[:space:]]*(fsid|mon[ _]host)[[:space:]]*=' "$GLANCE_RBD_CONF" || { echo "glance up: $GLANCE_RBD_CONF names no mon host" >&2; exit 1; }
    echo "keyring = $dir/etc/ceph.keyring"
    echo "log file = $dir/log/ceph-client.log"
  } >"$dir/etc/ceph.conf"
  chmod 600 "$dir/etc/ceph.conf"
  store_conf="stores = rbd
default_store = rbd
rbd_store_pool = $GLANCE_RBD_POOL
rbd_store_user = $GLANCE_RBD_USER
rbd_store_ceph_conf = $dir/etc/ceph.conf
rbd_store_chunk_size = 8"
else
  store_conf="stores = file
default_store = file
filesystem_store_datadir = $dir/images"
fi

# The packaged pipelines, and one more that trusts identity headers instead of Keystone tokens.
{
  cat "$paste"
  cat <<'INI'

[pipeline:glance-api-noauth]
pipeline = cors healthcheck http_proxy_to_wsgi versionnegotiation osprofiler context rootapp
INI
} >"$dir/etc/glance-api-paste.ini"

# workers = 0: one process, the pid recorded, and half the start-up time of a parent and a child.
# The deprecated show_multiple_locations warns in the log, and is the only way zed shows locations.
cat >"$dir/etc/glance-api.conf" <<CONF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $port
workers = 0
log_file = $dir/log/glance-api.log
show_image_direct_url = true
show_multiple_locations = true
image_cache_dir = $dir/cache
image_size_cap = $size_cap

[database]
connection = sqlite:///$dir/glance.sqlite

[paste_deploy]
config_file = $dir/etc/glance-api-paste.ini
flavor = noauth

[glance_store]
$store_conf

[os_glance_staging_store]
filesystem_store_datadir = $dir/staging

[os_glance_tasks_store]
filesystem_store_datadir = $dir/staging

[oslo_concurrency]
lock_path = $dir/locks

[oslo_policy]
enforce_new_defaults = false
enforce_scope = false
CONF

/usr/bin/glance-manage --config-file "$dir/etc/glance-api.conf" db_sync >"$dir/log/db-sync.log" 2>&1 ||
  { echo "glance up: glance-manage db_sync failed" >&2; exit 1; }

# setsid: a session of its own, so the caller's terminal and process group do not reach it. A
# background job of a script is not a group leader, so setsid execs in place and $! is glance-api.
setsid /usr/bin/glance-api --config-file "$dir/etc/glance-api.conf" </dev/null >>"$dir/log/glance-api.out" 2>&1 &
echo "$!" >"$dir/run/glance-api.pid"
pid=$!

# Alive: not gone, and not a zombie waiting for a reaper.
alive() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; [ "${s%% *}" != Z ]; }
# Answers: an image list as a member of a project, which goes through the pipeline, the policy
# and the database.
endpoint=http://127.0.0.1:$port
answers() {
  curl -fs -o /dev/null --max-time 2 -H 'Accept: application/json' -H 'X-Identity-Status: Confirmed' \
    -H 'X-Roles: member,reader' -H 'X-Project-Id: up-check' -H 'X-Tenant-Id: up-check' -H 'X-User-Id: up-check' \
    "$endpoint/v2/images?limit=1"
}
for _ in $(seq 300); do
  alive "$pid" || { echo "glance up: glance-api exited" >&2; exit 1; }
  if answers; then
    ok=1
    echo "KINDLING_GLANCE_ENDPOINT=$endpoint"
    exit 0
  fi
  sleep 0.2
done
echo "glance up: glance-api did not answer on $endpoint/v2/images within 60 s" >&2
exit 1
