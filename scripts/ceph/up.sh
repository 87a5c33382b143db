#!/usr/bin/env bash
# Brings up a throwaway single-node Ceph cluster on 127.0.0.1 for tests and benchmarks: one
# mon, one mgr, one bluestore OSD on a sparse file, cephx on, small placement-group counts,
# a fast paxos interval (about 10 s from nothing to HEALTH_OK), and a restricted client
# (`profile rbd`) for kindling. Everything lives in DIR; stop it with down.sh DIR.
#   up.sh DIR [POOL...]      default pool: volumes
#   CEPH_OSD_SIZE_GIB=10     size of the OSD's sparse block file; benchmarks that fill large
#                            images need more (bluestore refuses writes past its full ratio)
# Prints shell assignments for the client: CEPH_CONF, KINDLING_CEPH_USER, KINDLING_CEPH_KEYRING.
set -euo pipefail

dir=${1:?usage: up.sh DIR [POOL...]}
shift
pools=("${@:-volumes}")
[ ${#pools[@]} -gt 0 ] || pools=(volumes)
mon_port=${CEPH_MON_PORT:-6789}
mon_v2_port=${CEPH_MON_V2_PORT:-3300}
osd_size_gib=${CEPH_OSD_SIZE_GIB:-10}
[[ $osd_size_gib =~ ^[1-9][0-9]{0,4}$ ]] || { echo "ceph up: CEPH_OSD_SIZE_GIB must be a whole number of GiB, got '$osd_size_gib'" >&2; exit 1; }

for tool in ceph-mon ceph-mgr ceph-osd ceph ceph-authtool monmaptool rbd uuidgen; do
  command -v "$tool" >/dev/null || { echo "ceph up: $tool is missing (apt-get install ceph-mon ceph-osd ceph-mgr ceph-common uuid-runtime)" >&2; exit 1; }
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

# kindling's own client: rbd on its pools only.
caps=()
for pool in "${pools[@]}"; do caps+=("profile rbd pool=$pool"); done
ceph auth get-or-create client.kindling mon 'profile rbd' osd "$(IFS=,; echo "${caps[*]}")" -o "$dir/kindling.keyring" >/dev/null
chmod 600 "$dir/kindling.keyring" "$dir/keyring"

echo "CEPH_CONF=$CEPH_CONF"
echo "KINDLING_CEPH_USER=kindling"
echo "KINDLING_CEPH_KEYRING=$dir/kindling.keyring"
