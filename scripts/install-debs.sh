#!/usr/bin/env bash
# Installs the Debian packages kindling runs and tests with, when they are missing.
# Idempotent: installed packages are left alone, and nothing is fetched when all are present.
# Needs root for apt-get; as another user it only says what is missing.
set -euo pipefail

packages=(
  gcc libc6-dev  # the NBD server's native data path (provider/nbd/native), built by make setup
  qemu-utils   # qemu-img: allocation maps (SEEK_DATA/SEEK_HOLE) and image checks
  xz-utils zstd bzip2  # compressed images (provider/images/decompress.ts inflates them with these)
  gdisk cryptsetup-bin  # sgdisk and cryptsetup build the image inspector's test corpus (GPT, LUKS)
  util-linux   # losetup, fallocate
  e2fsprogs    # mkfs.ext4 and filefrag, for the tests' small filesystems
  xfsprogs     # mkfs.xfs with reflink, for copy-on-write tests and benchmarks
  btrfs-progs  # the other reflink filesystem users run
  libnbd-bin   # nbdinfo, nbdcopy, nbdfuse: NBD clients for tests and local attach
  python3-libnbd  # nbdsh, for scripted NBD tests
  fuse3        # fusermount3, for nbdfuse
  fio          # its nbd engine drives the NBD tests and benchmarks
  nbdkit       # the peer NBD server of the benchmarks
  strace       # syscall counts of the NBD servers (bench/nbd.ts, KINDLING_BENCH_STRACE=1)
  openssl      # certificates for the TLS tests (NBD, the database servers)
  # The rbd driver: the rbd and ceph commands, qemu-nbd's librbd driver (the data path of open()),
  # rbd-fuse (local attach without the kernel's rbd module), and a throwaway cluster for tests.
  # librbd1 (which ceph-common brings too) is what the NBD native path loads at run time.
  ceph-common librbd1 qemu-block-extra rbd-fuse
  ceph-mon ceph-mgr ceph-osd ceph-base uuid-runtime
  # The object driver's stores, for its tests and benchmarks: radosgw (S3 and Swift APIs on the
  # same throwaway cluster); python3-swiftclient warms up its first bucket in scripts/ceph/up.sh,
  # and curl asks the scripts' servers whether they answer yet.
  radosgw python3-swiftclient curl
  # A Swift all-in-one (scripts/swift), with memcached for tempauth's tokens.
  swift swift-proxy swift-object swift-container swift-account memcached
  # The peers of bench/object.ts on radosgw: nbdkit's S3 plugin (Python, through boto3) and
  # s3backer (FUSE: the benchmark serves its file with nbdkit's file plugin).
  nbdkit-plugin-python python3-boto3 s3backer
  # The postgres and mysql record stores: throwaway servers for their tests and benchmarks
  # (scripts/postgres, scripts/mariadb), with the psql and mariadb clients the tests check them by.
  postgresql mariadb-server
  # Real hypervisors for the connection info tests: a tiny qemu guest (busybox in its initramfs;
  # the kernel comes from Debian's cloud kernel package, unpacked into a cache by the test, not
  # installed) and a throwaway libvirtd with the qemu driver.
  qemu-system-x86 busybox-static libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
  # A throwaway Glance v2 image service with no Keystone (scripts/glance), for the image tests.
  glance-api python3-glance-store
)
# npm fetches the current LTS Node when the system Node is too old. Machines whose Node came
# from elsewhere (nodesource, nvm) already have it, and Debian's npm would conflict with it.
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-debs: missing Debian packages: ${missing[*]} (run as root: apt-get install ${missing[*]})" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-debs: no apt-get here; install these yourself: ${missing[*]}" >&2
  exit 0
fi
echo "install-debs: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
