#!/usr/bin/env bash
# A throwaway Postgres for tests and benchmarks: its data in DIR, listening on 127.0.0.1:PORT
# only, trust authentication, fsync off. Debian's postgresql package (scripts/setup.sh --test).
#   scripts/postgres.sh start DIR PORT   initdb + start + create database `streamai`;
#                                        prints the DATABASE_URL on stdout (logs go to stderr)
#   scripts/postgres.sh stop DIR         stop the server and delete DIR
# Postgres refuses to run as root, so as root the server runs as the `postgres` user.
set -euo pipefail

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ ! -x "$PG_BIN/postgres" ]; then
  echo "postgres.sh: Postgres is not installed (run scripts/setup.sh --test)" >&2
  exit 1
fi

# Runs a Postgres program as the owner of the data directory.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

usage() {
  echo "usage: scripts/postgres.sh start DIR PORT | stop DIR" >&2
  exit 2
}

case "${1:-}" in
  start)
    [ $# -eq 3 ] || usage
    dir=$(realpath -m "$2")
    port=$3
    if [ -e "$dir" ]; then
      echo "postgres.sh: $dir already exists; stop it first (scripts/postgres.sh stop $dir)" >&2
      exit 1
    fi
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then
      chown postgres: "$dir"
    fi
    chmod 700 "$dir"
    as_owner "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >&2
    as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
      start >&2
    as_owner "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres streamai >&2
    echo "postgres://postgres@127.0.0.1:$port/streamai"
    ;;
  stop)
    [ $# -eq 2 ] || usage
    dir=$(realpath -m "$2")
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    fi
    rm -rf "$dir"
    ;;
  *) usage ;;
esac
