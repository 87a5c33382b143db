#!/usr/bin/env bash
# Stops the server up.sh started in DIR, waits until every process of it is gone, removes DIR.
#   down.sh DIR          stop and remove DIR
#   down.sh --keep DIR   stop only, keeping the data for `up.sh --again DIR`
# SIGINT is PostgreSQL's fast shutdown (sessions ended, a checkpoint, exit); SIGTERM would wait
# for every client to disconnect.
exec "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../lib/stop-server.sh" postgres INT "$@"
