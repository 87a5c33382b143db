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

again=
if [ "${1:-}" = --again ]; then again=1; shift; fi
dir=${1:?usage: up.sh DIR PORT | up.sh --again DIR}
port=${2:-}
bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
here=$(cd "$(dirname "$0")" && pwd)
for tool in "$bin/initdb" "$bin/postgres" psql; do
  command -v "$tool" >/dev/null || { echo "postgres up: $tool is missing (apt-get install postgresql)" >&2; exit 1; }
done
# Paths and the port go into postgresql.conf between quotes: keep them plain.
[[ $dir =~ ^[A-Za-z0-9._/+-]+$ ]] || { echo "postgres up: DIR must be a plain path (letters, digits, . _ / + -), got '$dir'" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
  user=postgres
  as_server=(setpriv --reuid="$user" --regid="$user" --init-groups --)
else
  user=$(id -un)
  as_server=()
fi

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
  [[ $port =~ ^[1-9][0-9]{0,4}$ ]] || { echo "postgres up: PORT must be a TCP port, got '$port'" >&2; exit 1; }
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd -P)
  if [ -n "$(ls -A "$dir" | grep -vx lost+found)" ]; then
    echo "postgres up: $dir is not empty (down.sh $dir removes an old server)" >&2; exit 1
  fi
else
  [ -f "$dir/data/PG_VERSION" ] || { echo "postgres up: no server made by up.sh in $dir" >&2; exit 1; }
  dir=$(cd "$dir" && pwd -P)
  port=$(sed -n 's/^port = \([0-9]*\)$/\1/p' "$dir/data/postgresql.conf" | tail -1)
fi
# A unix socket's path has room for 107 bytes.
[ ${#dir} -le 90 ] || { echo "postgres up: DIR's path is too long for a unix socket in it: $dir" >&2; exit 1; }

log=$dir/server.log
pid=
ok=
# On any failure: the log, and nothing left running (down.sh --keep stops what this started).
on_exit() {
  [ -n "$ok" ] && return
  [ -n "$pid" ] && "$here/down.sh" --keep "$dir" >/dev/null 2>&1
  echo "postgres up: failed; the server's log follows" >&2
  [ -n "$again" ] || cat "$dir/initdb.log" >&2 2>/dev/null
  cat "$log" >&2 2>/dev/null || true
}
trap on_exit EXIT

if [ -n "$again" ]; then
  if [ -f "$dir/server.pid" ] && [ "$(readlink "/proc/$(cat "$dir/server.pid")/cwd" 2>/dev/null)" = "$dir/data" ]; then
    ok=1; echo "postgres up: the server in $dir is running (pid $(cat "$dir/server.pid"))" >&2; exit 1
  fi
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
    command -v openssl >/dev/null || { echo "postgres up: openssl is missing (apt-get install openssl)" >&2; exit 1; }
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
      # PostgreSQL refuses a key that others than its owner can read.
      if [ ${#as_server[@]} -gt 0 ]; then chown "$user:" server-key.pem; fi
    )
    chmod 755 "$tls"
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
