#!/usr/bin/env bash
# Brings up a throwaway single-node Ceph cluster on 127.0.0.1 for tests and benchmarks: one
# mon, one mgr, one bluestore OSD on a sparse file, cephx on, small placement-group counts,
# a fast paxos interval (about 10 s from nothing to HEALTH_OK), and a restricted client
# (`profile rbd`) for kindling. Everything lives in DIR; stop it with down.sh DIR.
#   up.sh DIR [POOL...]      default pool: volumes
#   CEPH_POOLS=none          no rbd pool and no rbd client: a cluster for radosgw alone
#   CEPH_OSD_SIZE_GIB=10     size of the OSD's sparse block file; benchmarks that fill large
#                            images need more (bluestore refuses writes past its full ratio)
#   CEPH_RGW_PORT=PORT       also radosgw (S3 and Swift APIs, beast on 127.0.0.1:PORT), with an
#                            S3 user `kindling` and its Swift subuser `kindling:swift`, their
#                            generated keys in files in DIR (0600)
# Prints shell assignments for the client: CEPH_CONF, KINDLING_CEPH_USER, KINDLING_CEPH_KEYRING;
# with radosgw also KINDLING_RGW_ENDPOINT, KINDLING_RGW_ACCESS_KEY_FILE,
# KINDLING_RGW_SECRET_KEY_FILE, KINDLING_RGW_SWIFT_AUTH_URL, KINDLING_RGW_SWIFT_USER and
# KINDLING_RGW_SWIFT_KEY_FILE (the keys themselves are never printed).
set -euo pipefail

dir=${1:?usage: up.sh DIR [POOL...]}
shift
if [ "${CEPH_POOLS:-}" = none ]; then
  [ $# -eq 0 ] || { echo "ceph up: CEPH_POOLS=none, yet pools were named: $*" >&2; exit 1; }
  pools=()
else
  pools=("${@:-volumes}")
fi
mon_port=${CEPH_MON_PORT:-6789}
mon_v2_port=${CEPH_MON_V2_PORT:-3300}
osd_size_gib=${CEPH_OSD_SIZE_GIB:-10}
[[ $osd_size_gib =~ ^[1-9][0-9]{0,4}$ ]] || { echo "ceph up: CEPH_OSD_SIZE_GIB must be a whole number of GiB, got '$osd_size_gib'" >&2; exit 1; }
rgw_port=${CEPH_RGW_PORT:-}
[ -z "$rgw_port" ] || [[ $rgw_port =~ ^[1-9][0-9]{0,4}$ ]] || { echo "ceph up: CEPH_RGW_PORT must be a TCP port, got '$rgw_port'" >&2; exit 1; }

tools=(ceph-mon ceph-mgr ceph-osd ceph ceph-authtool monmaptool rbd uuidgen)
[ -z "$rgw_port" ] || tools+=(radosgw radosgw-admin curl /usr/bin/python3)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { echo "ceph up: $tool is missing (apt-get install ceph-mon ceph-osd ceph-mgr ceph-common uuid-runtime radosgw curl python3-swiftclient)" >&2; exit 1; }
done

rm -rf "$dir"
mkdir -p "$dir"/{mon,mgr,osd,run,log}
dir=$(cd "$dir" && pwd)
fsid=$(uuidgen)
export CEPH_CONF="$dir/ceph.conf"
cat > "$CEPH_CONF" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_v2_port,v1:127.0.0.1:$mon_port]
public addr = 127.0.0.1
# The OSD binds its cluster and heartbeat ports on 0.0.0.0 without this.
cluster addr = 127.0.0.1
keyring = $dir/keyring
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon allow pool delete = true
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0
paxos propose interval = 0.05
auth allow insecure global id reclaim = false
[mon]
mon data = $dir/mon
[mgr]
mgr data = $dir/mgr
keyring = $dir/mgr/keyring
[osd]
osd data = $dir/osd
keyring = $dir/osd/keyring
osd objectstore = bluestore
bluestore block size = $((osd_size_gib * 1024 * 1024 * 1024))
osd memory target = 939524096
CONF
rgw_name=client.rgw.kindling
if [ -n "$rgw_port" ]; then
  mkdir -p "$dir/rgw"
  # `rgw swift url`: the storage URL Swift's auth hands out names this endpoint, not a guess.
  # tcp_nodelay=1: without it beast sends a small answer's body behind its headers only once the
  # client's delayed ACK comes, and every small GET takes about 40 ms instead of 2-3.
  cat >> "$CEPH_CONF" <<CONF
[$rgw_name]
keyring = $dir/rgw/keyring
rgw data = $dir/rgw
rgw frontends = beast endpoint=127.0.0.1:$rgw_port tcp_nodelay=1
rgw swift url = http://127.0.0.1:$rgw_port
CONF
fi

# The mon keyring stays outside the mon data dir: mkfs refuses a non-empty one.
ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$dir/keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/keyring" >/dev/null
monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_v2_port,v1:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null
ceph-mon --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring"
ceph-mon -i a
for _ in $(seq 120); do ceph -s --connect-timeout 2 >/dev/null 2>&1 && break; sleep 0.5; done

ceph auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' -o "$dir/mgr/keyring"
ceph-mgr -i x

# OSD mkfs must not ask the mon for config: it has no key yet (--no-mon-config, then auth add).
uuid=$(uuidgen)
id=$(ceph osd new "$uuid")
ceph-osd -i "$id" --mkfs --mkkey --osd-uuid "$uuid" --no-mon-config >/dev/null 2>&1
ceph auth add "osd.$id" osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' -i "$dir/osd/keyring" >/dev/null
ceph-osd -i "$id"
for _ in $(seq 120); do ceph osd stat -f json | grep -q '"num_up_osds":1' && break; sleep 0.5; done

for pool in "${pools[@]}"; do
  ceph osd pool create "$pool" 8 8 >/dev/null 2>&1
  rbd pool init "$pool"
done

# kindling's own client: rbd on its pools only (none without pools).
if [ ${#pools[@]} -gt 0 ]; then
  caps=()
  for pool in "${pools[@]}"; do caps+=("profile rbd pool=$pool"); done
  ceph auth get-or-create client.kindling mon 'profile rbd' osd "$(IFS=,; echo "${caps[*]}")" -o "$dir/kindling.keyring" >/dev/null
  chmod 600 "$dir/kindling.keyring"
fi
chmod 600 "$dir/keyring"

if [ -n "$rgw_port" ]; then
  # On failure: radosgw's log, and no radosgw left running (the rest is down.sh's, as before).
  rgw_failed() {
    echo "ceph up: $1; the end of radosgw's log follows" >&2
    tail -n 30 "$dir/log/$rgw_name.log" >&2 2>/dev/null
    [ -f "$dir/run/$rgw_name.pid" ] && kill -KILL "$(cat "$dir/run/$rgw_name.pid")" 2>/dev/null
    exit 1
  }
  ceph auth get-or-create "$rgw_name" mon 'allow rw' osd 'allow rwx' mgr 'allow rw' -o "$dir/rgw/keyring" >/dev/null
  chmod 600 "$dir/rgw/keyring"
  # radosgw makes its own pools at start (.rgw.root, default.rgw.*), then forks into the
  # background with a pid file.
  radosgw -n "$rgw_name" || rgw_failed "radosgw did not start"
  endpoint=http://127.0.0.1:$rgw_port
  answered=
  for _ in $(seq 120); do
    curl -fs -o /dev/null --max-time 2 "$endpoint/" && { answered=1; break; }
    sleep 0.5
  done
  [ -n "$answered" ] || rgw_failed "radosgw did not answer on $endpoint within 60 s"

  # The keys are generated by radosgw-admin itself and read from its JSON into files: no key is
  # ever on a command line, and none is printed. (&&: set -e does not reach into a subshell
  # whose status is tested.)
  (
    umask 077
    radosgw-admin user create --uid=kindling --display-name=kindling --gen-access-key --gen-secret 2>>"$dir/log/radosgw-admin.log" |
      /usr/bin/python3 -c 'import json, sys
user = json.load(sys.stdin)
key = next(k for k in user["keys"] if k["user"] == "kindling")
open(sys.argv[1], "w").write(key["access_key"] + "\n")
open(sys.argv[2], "w").write(key["secret_key"] + "\n")' "$dir/rgw.access-key" "$dir/rgw.secret-key" &&
    radosgw-admin subuser create --uid=kindling --subuser=kindling:swift --access=full --key-type=swift --gen-secret 2>>"$dir/log/radosgw-admin.log" |
      /usr/bin/python3 -c 'import json, sys
user = json.load(sys.stdin)
key = next(k for k in user["swift_keys"] if k["user"] == "kindling:swift")
open(sys.argv[1], "w").write(key["secret_key"] + "\n")' "$dir/rgw.swift-key"
  ) || rgw_failed "radosgw-admin could not make the user kindling (its log: $dir/log/radosgw-admin.log)"

  # The first bucket makes radosgw create its bucket index and data pools, which takes seconds:
  # one bucket and one object made and removed here, so that tests do not pay for it.
  /usr/bin/python3 - "$endpoint/auth/1.0" "$dir/rgw.swift-key" <<'PY' 2>>"$dir/log/radosgw-warm-up.log" ||
import sys
from swiftclient.client import Connection
auth_url, key_file = sys.argv[1:]
conn = Connection(authurl=auth_url, user="kindling:swift", key=open(key_file).read().strip(), auth_version="1", retries=0)
conn.put_container("kindling-warm-up")
conn.put_object("kindling-warm-up", "object", b"warm")
conn.delete_object("kindling-warm-up", "object")
conn.delete_container("kindling-warm-up")
PY
    rgw_failed "the warm-up bucket could not be made and removed (its log: $dir/log/radosgw-warm-up.log)"
fi

echo "CEPH_CONF=$CEPH_CONF"
if [ ${#pools[@]} -gt 0 ]; then
  echo "KINDLING_CEPH_USER=kindling"
  echo "KINDLING_CEPH_KEYRING=$dir/kindling.keyring"
fi
if [ -n "$rgw_port" ]; then
  echo "KINDLING_RGW_ENDPOINT=$endpoint"
  echo "KINDLING_RGW_ACCESS_KEY_FILE=$dir/rgw.access-key"
  echo "KINDLING_RGW_SECRET_KEY_FILE=$dir/rgw.secret-key"
  echo "KINDLING_RGW_SWIFT_AUTH_URL=$endpoint/auth/1.0"
  echo "KINDLING_RGW_SWIFT_USER=kindling:swift"
  echo "KINDLING_RGW_SWIFT_KEY_FILE=$dir/rgw.swift-key"
fi
