#!/usr/bin/env bash
# Brings up a throwaway PostgreSQL 15 server for tests and benchmarks: a fresh cluster in DIR/data,
# TCP on 127.0.0.1:PORT only, its unix socket in DIR (never /var/run), and a database `kindling`
# owned by a role `kindling` (not a superuser) that logs in over TCP with a random password
# (scram-sha-256), kept in DIR/password (0600). Stop it with down.sh DIR.
#   up.sh DIR PORT      a fresh server; DIR must be missing or empty (a new filesystem's
#                       lost+found aside)
#   up.sh --again DIR   starts the server an earlier up.sh made in DIR again, after
#                       `down.sh --keep DIR` or a kill: same port, data, password and TLS
#   TLS_DIR=DIR2        also offer TLS, with a CA (DIR2/ca.pem) and a server certificate for
#                       127.0.0.1 that this script makes there with openssl
#   DURABLE=1           every commit on disk before it returns (synchronous_commit=on), for
#                       tests of what a killed server keeps
#   PG_BIN=...          PostgreSQL's server programs (default /usr/lib/postgresql/15/bin)
# Fast, and still crash safe: commits return before their WAL is written (synchronous_commit=off;
# a crash, a kill of the server included, loses at most the last 600 ms of commits, never
# consistency), and fsync stays on. The superuser `postgres` logs in over the unix socket only, by peer
# authentication, mapped from the caller's own user: psql -h DIR -p PORT -U postgres.
# As root the server runs as the `postgres` user (initdb refuses root); otherwise as the caller.
# Prints url=postgres://kindling@127.0.0.1:PORT/kindling and pid=PID.
set -euo pipefail

name=postgres
setup_log=initdb.log
system_user=postgres
bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
here=$(cd "$(dirname "$0")" && pwd)
for tool in "$bin/initdb" "$bin/postgres" psql; do
  command -v "$tool" >/dev/null || { echo "postgres up: $tool is missing (apt-get install postgresql)" >&2; exit 1; }
done
# shellcheck source=../lib/server-up.sh
source "$here/../lib/server-up.sh" "$@"

if [ -n "$again" ]; then
  [ -f "$dir/data/PG_VERSION" ] || { echo "postgres up: no server made by up.sh in $dir" >&2; exit 1; }
  dir=$(cd "$dir" && pwd -P)
  port=$(sed -n 's/^port = \([0-9]*\)$/\1/p' "$dir/data/postgresql.conf" | tail -1)
fi
check_socket_path
fail_with_logs "$dir/server.log"

if [ -n "$again" ]; then
  refuse_if_running
  # After a kill, the postmaster's children linger a moment: down.sh --keep waits them out. Then
  # the lock files are stale, and go: PostgreSQL would take a dead postmaster that is still a
  # zombie (waiting for its reaper) for a live one.
  "$here/down.sh" --keep "$dir" >&2
  rm -f "$dir/data/postmaster.pid" "$dir/.s.PGSQL.$port.lock"
else
  if [ ${#as_server[@]} -gt 0 ]; then chown "$user:" "$dir"; fi
  chmod 700 "$dir"
  reach "$dir"
  # No --pwfile: the superuser has no password at all (peer authentication on the socket only).
  # --no-sync: initdb's closing fsync only guards a seconds-old cluster against power loss.
  "${as_server[@]}" "$bin/initdb" -D "$dir/data" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=reject --no-sync --no-instructions >"$dir/initdb.log" 2>&1
  cat >>"$dir/data/postgresql.conf" <<CONF

# kindling's throwaway server (scripts/postgres/up.sh)
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
unix_socket_permissions = 0700
password_encryption = 'scram-sha-256'
synchronous_commit = $([ "${DURABLE:-}" = 1 ] && echo on || echo off)
fsync = on
# Two WAL segments kept in reserve, not five: the server fits a small filesystem for full-disk tests.
min_wal_size = 32MB
log_destination = 'stderr'
logging_collector = off
CONF
  # Written over initdb's: the superuser by peer on the socket (mapped from the caller), kindling
  # by password over TCP, nobody else anywhere.
  cat >"$dir/data/pg_hba.conf" <<HBA
# TYPE  DATABASE  USER      ADDRESS       METHOD
local   all       postgres                peer map=admin
host    kindling  kindling  127.0.0.1/32  scram-sha-256
HBA
  printf 'admin %s postgres\nadmin %s postgres\n' "$(id -un)" "$user" >"$dir/data/pg_ident.conf"

  if [ -n "${TLS_DIR:-}" ]; then
    make_certificates
    printf "ssl = on\nssl_cert_file = '%s'\nssl_key_file = '%s'\n" "$tls/server.pem" "$tls/server-key.pem" >>"$dir/data/postgresql.conf"
  fi
fi

# The server's stderr is its log; the file is the server user's, so it can be reopened as that user.
touch "$log"
if [ ${#as_server[@]} -gt 0 ]; then chown "$user:" "$log"; fi
# setsid: its own session, so the caller's terminal and process group do not reach it. A
# background job of a script is not a group leader, so setsid execs in place and $! is the server.
setsid "${as_server[@]}" "$bin/postgres" -D "$dir/data" </dev/null >>"$log" 2>&1 &
pid=$!
echo "$pid" >"$dir/server.pid"

# Alive: not gone, and not a zombie waiting for a reaper.
alive() { local s; s=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1; s=${s##*) }; [ "${s%% *}" != Z ]; }
admin() { psql -X -q -w -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres "$@"; }
ready=
for _ in $(seq 300); do
  alive || { echo "postgres up: the server exited" >&2; exit 1; }
  admin -c 'select 1' >/dev/null 2>&1 && { ready=1; break; }
  sleep 0.2
done
[ -n "$ready" ] || { echo "postgres up: the server did not accept connections within 60 s" >&2; exit 1; }

if [ -z "$again" ]; then
  password=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
  (umask 077; printf '%s\n' "$password" >"$dir/password")
  # The password reaches psql on stdin (printf is a shell builtin, so no command line carries it);
  # the server keeps only its SCRAM verifier.
  printf "CREATE ROLE kindling LOGIN PASSWORD '%s';\nCREATE DATABASE kindling OWNER kindling;\n" "$password" | admin >/dev/null
fi
password=$(cat "$dir/password")

ready=
for _ in $(seq 100); do
  alive || { echo "postgres up: the server exited" >&2; exit 1; }
  PGPASSWORD=$password psql -X -q -w -h 127.0.0.1 -p "$port" -U kindling -d kindling -c 'select 1' >/dev/null 2>&1 && { ready=1; break; }
  sleep 0.2
done
[ -n "$ready" ] || { echo "postgres up: kindling's password login over TCP failed" >&2; exit 1; }

ok=1
echo "url=postgres://kindling@127.0.0.1:$port/kindling"
echo "pid=$pid"
