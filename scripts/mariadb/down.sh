#!/usr/bin/env bash
# Stops the server up.sh started in DIR, waits until every process of it is gone, removes DIR.
#   down.sh DIR          stop and remove DIR
#   down.sh --keep DIR   stop only, keeping the data for `up.sh --again DIR`
# SIGTERM is MariaDB's normal shutdown (connections closed, InnoDB's buffers written, exit).
exec "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../lib/stop-server.sh" mariadb TERM "$@"
