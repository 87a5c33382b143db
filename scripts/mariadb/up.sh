#!/usr/bin/env bash
# Brings up a throwaway MariaDB server for tests and benchmarks (kindling's `mysql` store): a fresh
# data directory in DIR/data, TCP on 127.0.0.1:PORT only, its unix socket in DIR, and a database
# `kindling` with a user `kindling`@`127.0.0.1` (all rights on that database only) who logs in
# with a random password (mysql_native_password, which every client, mysql2 included, speaks),
# kept in DIR/password (0600). Stop it with down.sh DIR.
#   up.sh DIR PORT      a fresh server; DIR must be missing or empty (a new filesystem's
#                       lost+found aside)
#   up.sh --again DIR   starts the server an earlier up.sh made in DIR again, after
#                       `down.sh --keep DIR` or a kill: same port, data, password and TLS
#   TLS_DIR=DIR2        also offer TLS, with a CA (DIR2/ca.pem) and a server certificate for
#                       127.0.0.1 that this script makes there with openssl
#   DURABLE=1           every commit on disk before it returns (innodb_flush_log_at_trx_commit=1),
#                       for tests of what survives a crash of the machine
# Fast, and still crash safe: the redo log reaches the OS at every commit and the disk once a
# second (innodb_flush_log_at_trx_commit=2; a killed server loses nothing, a crashed machine at
# most that second), no binary log. The admin account is root by unix_socket authentication on
# the socket (the caller's own user when not root): mariadb -S DIR/mysqld.sock -u root.
# As root the server runs as the `mysql` user; otherwise as the caller. Only DIR/my.cnf is read,
# never the machine's /etc/mysql.
# Prints url=mysql://kindling@127.0.0.1:PORT/kindling and pid=PID.
set -euo pipefail

again=
if [ "${1:-}" = --again ]; then again=1; shift; fi
dir=${1:?usage: up.sh DIR PORT | up.sh --again DIR}
port=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
PATH=$PATH:/usr/sbin
for tool in mariadbd mariadb-install-db mariadb; do
  command -v "$tool" >/dev/null || { echo "mariadb up: $tool is missing (apt-get install mariadb-server)" >&2; exit 1; }
done
[[ $dir =~ ^[A-Za-z0-9._/+-]+$ ]] || { echo "mariadb up: DIR must be a plain path (letters, digits, . _ / + -), got '$dir'" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
  user=mysql
  as_server=(setpriv --reuid="$user" --regid="$user" --init-groups --)
else
  user=$(id -un)
  as_server=()
fi
admin_user=$(id -un)

# Lets the server's user search every directory above PATH: temp dirs made by mkdtemp are 0700
# root. Search permission only (o+x), so names inside stay unlistable. Top down, since access(2)
# on a directory fails when any directory above it is closed.
reach() {
  [ ${#as_server[@]} -gt 0 ] || return 0
  local p=$1 up=()
  while [ "$p" != / ]; do p=$(dirname "$p"); up=("$p" "${up[@]}"); done
  for p in "${up[@]}"; do "${as_server[@]}" test -x "$p" || chmod o+x "$p"; done
}

if [ -z "$again" ]; then
  [[ $port =~ ^[1-9][0-9]{0,4}$ ]] || { echo "mariadb up: PORT must be a TCP port, got '$port'" >&2; exit 1; }
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd -P)
  if [ -n "$(ls -A "$dir" | grep -vx lost+found)" ]; then
    echo "mariadb up: $dir is not empty (down.sh $dir removes an old server)" >&2; exit 1
  fi
else
  [ -f "$dir/my.cnf" ] && [ -d "$dir/data/mysql" ] || { echo "mariadb up: no server made by up.sh in $dir" >&2; exit 1; }
  dir=$(cd "$dir" && pwd -P)
  port=$(sed -n 's/^port = \([0-9]*\)$/\1/p' "$dir/my.cnf")
fi
# A unix socket's path has room for 107 bytes.
[ ${#dir} -le 90 ] || { echo "mariadb up: DIR's path is too long for a unix socket in it: $dir" >&2; exit 1; }

log=$dir/server.log
pid=
ok=
# On any failure: the log, and nothing left running (down.sh --keep stops what this started).
on_exit() {
  [ -n "$ok" ] && return
  [ -n "$pid" ] && "$here/down.sh" --keep "$dir" >/dev/null 2>&1
  echo "mariadb up: failed; the server's log follows" >&2
  [ -n "$again" ] || cat "$dir/install.log" >&2 2>/dev/null
  cat "$log" >&2 2>/dev/null || true
}
trap on_exit EXIT

if [ -n "$again" ]; then
  if [ -f "$dir/server.pid" ] && [ "$(readlink "/proc/$(cat "$dir/server.pid")/cwd" 2>/dev/null)" = "$dir/data" ]; then
    ok=1; echo "mariadb up: the server in $dir is running (pid $(cat "$dir/server.pid"))" >&2; exit 1
  fi
  "$here/down.sh" --keep "$dir" >&2
else
  if [ ${#as_server[@]} -gt 0 ]; then chown "$user:" "$dir"; fi
  chmod 700 "$dir"
  reach "$dir"

  tls_conf=
  if [ -n "${TLS_DIR:-}" ]; then
    command -v openssl >/dev/null || { echo "mariadb up: openssl is missing (apt-get install openssl)" >&2; exit 1; }
    mkdir -p "$TLS_DIR"
    tls=$(cd "$TLS_DIR" && pwd -P)
    reach "$tls/ca.pem"
    (
      umask 077
      cd "$tls"
      openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc -days 365 \
        -keyout ca-key.pem -out ca.pem -subj "/CN=kindling test CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc \
        -keyout server-key.pem -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
      openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 365 -out server.pem \
        -extfile <(printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n') 2>/dev/null
      rm -f server.csr
      chmod 644 ca.pem server.pem
      if [ ${#as_server[@]} -gt 0 ]; then chown "$user:" server-key.pem; fi
    )
    chmod 755 "$tls"
    tls_conf="ssl_cert = $tls/server.pem
ssl_key = $tls/server-key.pem"
  fi

  # No secrets here: readable by the server's user, who reads it after dropping root.
  cat >"$dir/my.cnf" <<CONF
# kindling's throwaway server (scripts/mariadb/up.sh)
[mysqld]
datadir = $dir/data
socket = $dir/mysqld.sock
pid-file = $dir/mariadbd.pid
log-error = $log
port = $port
bind-address = 127.0.0.1
skip-name-resolve
skip-log-bin
innodb_flush_log_at_trx_commit = $([ "${DURABLE:-}" = 1 ] && echo 1 || echo 2)
# A 32 MiB redo log, not 96: the server fits a small filesystem for full-disk tests.
innodb_log_file_size = 32M
# Debian's own defaults (its /etc/mysql is not read).
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
$tls_conf
CONF
  chmod 644 "$dir/my.cnf"

  # root@localhost (and the caller, when not root) by unix_socket only: no admin password exists.
  "${as_server[@]}" mariadb-install-db --defaults-file="$dir/my.cnf" --auth-root-authentication-method=socket \
    --auth-root-socket-user="$admin_user" --skip-test-db >"$dir/install.log" 2>&1
fi

# mariadbd writes its log itself, as the server's user.
touch "$log"
if [ ${#as_server[@]} -gt 0 ]; then chown "$user:" "$log"; fi
# setsid: its own session, so the caller's terminal and process group do not reach it. A
# background job of a script is not a group leader, so setsid execs in place and $! is the server.
setsid "${as_server[@]}" mariadbd --defaults-file="$dir/my.cnf" </dev/null >>"$log" 2>&1 &
pid=$!
echo "$pid" >"$dir/server.pid"

# Alive: not gone, and not a zombie waiting for a reaper.
alive() { local s; s=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1; s=${s##*) }; [ "${s%% *}" != Z ]; }
admin() { mariadb --no-defaults -S "$dir/mysqld.sock" -u "$admin_user" "$@"; }
ready=
for _ in $(seq 300); do
  alive || { echo "mariadb up: the server exited" >&2; exit 1; }
  admin -e 'select 1' >/dev/null 2>&1 && { ready=1; break; }
  sleep 0.2
done
[ -n "$ready" ] || { echo "mariadb up: the server did not accept connections within 60 s" >&2; exit 1; }

if [ -z "$again" ]; then
  password=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
  (umask 077; printf '%s\n' "$password" >"$dir/password")
  # The password reaches the client on stdin (printf is a shell builtin, so no command line
  # carries it); the server keeps only its hash.
  printf "CREATE DATABASE kindling;\nCREATE USER 'kindling'@'127.0.0.1' IDENTIFIED BY '%s';\nGRANT ALL PRIVILEGES ON kindling.* TO 'kindling'@'127.0.0.1';\n" "$password" | admin
fi
password=$(cat "$dir/password")

ready=
for _ in $(seq 100); do
  alive || { echo "mariadb up: the server exited" >&2; exit 1; }
  MYSQL_PWD=$password mariadb --no-defaults --protocol=TCP -h 127.0.0.1 -P "$port" -u kindling kindling -e 'select 1' >/dev/null 2>&1 && { ready=1; break; }
  sleep 0.2
done
[ -n "$ready" ] || { echo "mariadb up: kindling's password login over TCP failed" >&2; exit 1; }

ok=1
echo "url=mysql://kindling@127.0.0.1:$port/kindling"
echo "pid=$pid"
