# Shared by scripts/postgres/up.sh and scripts/mariadb/up.sh (sourced, after they set `name`,
# e.g. postgres, `system_user`, the user their package made to run the server, `here`, their
# directory, and `setup_log`, the log of making a fresh server): reads `[--again] DIR [PORT]`,
# checks them, picks who runs the server, and for a fresh server makes DIR, which must then be
# empty. Sets again, dir, port, user, as_server; defines reach, check_socket_path,
# fail_with_logs, refuse_if_running and make_certificates.

again=
if [ "${1:-}" = --again ]; then again=1; shift; fi
dir=${1:?usage: up.sh DIR PORT | up.sh --again DIR}
port=${2:-}
# Paths and the port go into the server's configuration between quotes: keep them plain.
[[ $dir =~ ^[A-Za-z0-9._/+-]+$ ]] || { echo "$name up: DIR must be a plain path (letters, digits, . _ / + -), got '$dir'" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
  user=$system_user
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
  [[ $port =~ ^[1-9][0-9]{0,4}$ ]] || { echo "$name up: PORT must be a TCP port, got '$port'" >&2; exit 1; }
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd -P)
  if [ -n "$(ls -A "$dir" | grep -vx lost+found)" ]; then
    echo "$name up: $dir is not empty (down.sh $dir removes an old server)" >&2; exit 1
  fi
fi

# A unix socket's path has room for 107 bytes.
check_socket_path() {
  [ ${#dir} -le 90 ] || { echo "$name up: DIR's path is too long for a unix socket in it: $dir" >&2; exit 1; }
}

# On any failure: the logs, and nothing left running (down.sh --keep stops what up.sh started).
# Call with the server's log; set ok=1 once the server is up, pid once it is started.
fail_with_logs() {
  log=$1
  pid=
  ok=
  trap on_exit EXIT
}
on_exit() {
  [ -n "$ok" ] && return
  [ -n "$pid" ] && "$here/down.sh" --keep "$dir" >/dev/null 2>&1
  echo "$name up: failed; the server's log follows" >&2
  [ -n "$again" ] || cat "$dir/$setup_log" >&2 2>/dev/null
  cat "$log" >&2 2>/dev/null || true
}

# up.sh --again of a server that still runs: say so, and start nothing.
refuse_if_running() {
  if [ -f "$dir/server.pid" ] && [ "$(readlink "/proc/$(cat "$dir/server.pid")/cwd" 2>/dev/null)" = "$dir/data" ]; then
    ok=1; echo "$name up: the server in $dir is running (pid $(cat "$dir/server.pid"))" >&2; exit 1
  fi
}

# A CA and a server certificate for 127.0.0.1 signed by it, in TLS_DIR (CA at ca.pem; the server's
# certificate and key at server.pem and server-key.pem, the key the server user's own). Sets tls.
make_certificates() {
  command -v openssl >/dev/null || { echo "$name up: openssl is missing (apt-get install openssl)" >&2; exit 1; }
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
}
