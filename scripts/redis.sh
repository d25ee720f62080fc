#!/usr/bin/env bash
# A throwaway Redis for tests and benchmarks: listening on 127.0.0.1:PORT only, no
# persistence (no RDB snapshots, no AOF), its pid, log and working directory in DIR.
# Debian's redis-server package (scripts/setup.sh --test; it brings redis-cli along).
#   scripts/redis.sh start DIR PORT   start the daemon and wait until it answers PING;
#                                     prints the Redis URL on stdout (logs go to stderr)
#   scripts/redis.sh stop DIR         stop the server and delete DIR
# Redis runs as whoever calls this (root included: it only logs a warning about it).
set -euo pipefail

REDIS_SERVER=${REDIS_SERVER:-/usr/bin/redis-server}
REDIS_CLI=${REDIS_CLI:-/usr/bin/redis-cli}
if [ ! -x "$REDIS_SERVER" ] || [ ! -x "$REDIS_CLI" ]; then
  echo "redis.sh: Redis is not installed (run scripts/setup.sh --test)" >&2
  exit 1
fi

usage() {
  echo "usage: scripts/redis.sh start DIR PORT | stop DIR" >&2
  exit 2
}

# Whether process $1 still runs. A daemon's parent is init, and an init that is slow to
# reap (as in some containers) leaves the exited process a zombie that `kill -0` still
# finds for a second or two: a zombie counts as gone.
running() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $state != Z* ]]
}

# Stops the server whose pid is in DIR/redis.pid, if it still runs; SIGTERM makes Redis
# shut down cleanly (nothing to save here), SIGKILL after 10 s if it has not.
stop_server() {
  local pidfile=$1/redis.pid pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do
    running "$pid" || return 0
    sleep 0.1
  done
  echo "redis.sh: redis-server $pid did not stop in 10 s; killing it" >&2
  kill -9 "$pid" 2>/dev/null || true
}

case "${1:-}" in
  start)
    [ $# -eq 3 ] || usage
    dir=$(realpath -m "$2")
    port=$3
    if [ -e "$dir" ]; then
      echo "redis.sh: $dir already exists; stop it first (scripts/redis.sh stop $dir)" >&2
      exit 1
    fi
    mkdir -p "$dir"
    chmod 700 "$dir"
    # No config file: everything on the command line. `--save ''` turns RDB snapshots off,
    # `--appendonly no` the AOF; `--dir` is where a stray SAVE or a crash dump would go.
    "$REDIS_SERVER" \
      --port "$port" --bind 127.0.0.1 --protected-mode yes \
      --save '' --appendonly no \
      --dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >&2
    # daemonize returns before the server listens: poll for up to 10 s until it answers
    # PING, and check that the answer comes from our server (its process_id is the pid in
    # DIR), not from another Redis already on that port while ours failed to bind.
    for _ in $(seq 100); do
      if [ "$("$REDIS_CLI" -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ] && [ -s "$dir/redis.pid" ]; then
        served_by=$("$REDIS_CLI" -h 127.0.0.1 -p "$port" info server | sed -n 's/^process_id:\([0-9]*\).*/\1/p' || true)
        if [ "$served_by" = "$(cat "$dir/redis.pid")" ]; then
          echo "redis://127.0.0.1:$port/"
          exit 0
        fi
      fi
      sleep 0.1
    done
    echo "redis.sh: Redis did not answer on 127.0.0.1:$port within 10 s; its log:" >&2
    cat "$dir/redis.log" >&2 || true
    stop_server "$dir"
    rm -rf "$dir"
    exit 1
    ;;
  stop)
    [ $# -eq 2 ] || usage
    dir=$(realpath -m "$2")
    stop_server "$dir"
    rm -rf "$dir"
    ;;
  *) usage ;;
esac
