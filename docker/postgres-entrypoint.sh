#!/bin/sh
# PostgreSQL for the compose stack: a cluster in $PGDATA on first start with database
# `patio`, then the server in the foreground on 127.0.0.1:$PGPORT.
# Trust authentication on loopback only: the stack runs with host networking on one machine.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb --pgdata="$PGDATA" --username=postgres --auth=trust --encoding=UTF8 >/dev/null
  echo "CREATE DATABASE patio" | postgres --single -D "$PGDATA" postgres >/dev/null
fi
exec postgres -D "$PGDATA" -p "$PGPORT" -c listen_addresses=127.0.0.1 \
  -c unix_socket_directories=/tmp -c max_connections=200
