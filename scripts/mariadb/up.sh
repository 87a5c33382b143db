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

name=mariadb
setup_log=install.log
system_user=mysql
here=$(cd "$(dirname "$0")" && pwd)
PATH=$PATH:/usr/sbin
for tool in mariadbd mariadb-install-db mariadb; do
  command -v "$tool" >/dev/null || { echo "mariadb up: $tool is missing (apt-get install mariadb-server)" >&2; exit 1; }
done
# shellcheck source=../lib/server-up.sh
source "$here/../lib/server-up.sh" "$@"
admin_user=$(id -un)

if [ -n "$again" ]; then
  [ -f "$dir/my.cnf" ] && [ -d "$dir/data/mysql" ] || { echo "mariadb up: no server made by up.sh in $dir" >&2; exit 1; }
  dir=$(cd "$dir" && pwd -P)
  port=$(sed -n 's/^port = \([0-9]*\)$/\1/p' "$dir/my.cnf")
fi
check_socket_path
fail_with_logs "$dir/server.log"

if [ -n "$again" ]; then
  refuse_if_running
  "$here/down.sh" --keep "$dir" >&2
else
  if [ ${#as_server[@]} -gt 0 ]; then chown "$user:" "$dir"; fi
  chmod 700 "$dir"
  reach "$dir"

  tls_conf=
  if [ -n "${TLS_DIR:-}" ]; then
    make_certificates
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
