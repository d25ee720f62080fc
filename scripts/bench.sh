#!/usr/bin/env bash
# Every benchmark, one command: release build and bundle sizes, the relay under load
# (C = 1, 100, 1000, 10000 streams) with SSR latency, chunk gaps beside 1 MiB prompts, the
# ledger on and off, token counting of a 100-page contract, the database with a million
# ledger rows, and rendering a 10,000-chunk answer in Chromium. Figures go to stdout;
# BENCHMARKS.md records the latest. Everything runs on loopback and stops by itself.
# Durable streams and scale-out (`loadtest --scale`): the relay with its frame log in
# memory vs in Redis, resume latency, and three instances vs one behind nginx, on a
# throwaway Redis and nginx started here.
#   scripts/bench.sh [LEVELS]                 e.g. scripts/bench.sh 1,100,1000
#   scripts/bench.sh --scale-only [LEVELS]    builds, then only the scale-out phase
#                                             (LEVELS for its Redis-cost part; default 1,100,1000)
set -euo pipefail
cd "$(dirname "$0")/.."
export LEPTOS_OUTPUT_NAME=streamai

scale_only=false
if [ "${1:-}" = --scale-only ]; then
  scale_only=true
  shift
fi

# Throwaway services and the processes `loadtest --scale` starts, stopped however this
# script ends (success, failure, Ctrl-C): one trap for all of them. Each variable is
# set just before its service starts.
pg_dir=
redis_dir=
nginx_dirs=()
loadtest_dir=
stop_services() {
  if [ -n "$loadtest_dir" ]; then
    # Pids loadtest recorded for the processes it started; checked to still be ours
    # (the binaries under target/) so that a reused pid is never hit.
    touch "$loadtest_dir/pids"
    while read -r pid; do
      if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "target/.*/\(streamai\|fake-upstream\)"; then
        kill "$pid" 2>/dev/null || true
      fi
    done <"$loadtest_dir/pids"
    rm -rf "$loadtest_dir"
  fi
  loadtest_dir=
  local dir
  for dir in "${nginx_dirs[@]}"; do scripts/nginx.sh stop "$dir" || true; done
  nginx_dirs=()
  if [ -n "$redis_dir" ]; then scripts/redis.sh stop "$redis_dir" || true; fi
  redis_dir=
  if [ -n "$pg_dir" ]; then scripts/postgres.sh stop "$pg_dir" || true; fi
  pg_dir=
}
trap stop_services EXIT

# N free loopback ports, distinct (all bound at once, then released).
free_ports() {
  python3 -c 'import socket,sys
socks=[socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# Durable streams and scale-out: Redis, and nginx in front of the memory-log instance,
# of instance a, and of instances a, b, c; `loadtest --scale` starts the fake upstream
# and the instances on the ports given (see its doc comment), measures, and stops them.
scale_phase() {
  local levels=$1 ports nginx=() upstreams dir port
  echo "== durable streams and scale-out (machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB)"
  read -r -a ports <<<"$(free_ports 9)" # fake memory a b c, nginx x3, redis
  redis_dir=$(mktemp -u -d /tmp/streamai-redis.XXXXXX)
  local redis_url
  redis_url=$(scripts/redis.sh start "$redis_dir" "${ports[8]}")
  local i=5
  for upstreams in "${ports[1]}" "${ports[2]}" "${ports[2]} ${ports[3]} ${ports[4]}"; do
    dir=$(mktemp -u -d /tmp/streamai-nginx.XXXXXX)
    nginx_dirs+=("$dir")
    port=${ports[$i]}
    i=$((i + 1))
    # shellcheck disable=SC2086 # one port per word
    scripts/nginx.sh start "$dir" "$port" $upstreams >/dev/null
    nginx+=("$port:$(cat "$dir/nginx.pid")")
  done
  loadtest_dir=$(mktemp -d /tmp/streamai-loadtest-scale.XXXXXX)
  LOADTEST_REDIS_URL=$redis_url \
    LOADTEST_REDIS_PID=$(cat "$redis_dir/redis.pid") \
    LOADTEST_PORTS=$(IFS=,; echo "${ports[*]:0:5}") \
    LOADTEST_NGINX=$(IFS=,; echo "${nginx[*]}") \
    LOADTEST_DIR=$loadtest_dir \
    target/release/loadtest --scale "$levels"
  stop_services
}

scripts/setup.sh --test --release
scripts/release.sh
cargo build --release --features ssr --bin fake-upstream --bin loadtest --locked

# The server holds two sockets per stream (browser side and provider side). Raise the
# soft fd limit to the hard one; where the hard limit cannot hold 10,000 streams (this
# sandbox: 20,000), the top level is capped to what fits, and said so.
hard=$(ulimit -Hn)
ulimit -n "$hard" 2>/dev/null || true
fits=$(( ( $(ulimit -n) - 500 ) / 2 / 1000 * 1000 ))
levels=$(echo "${1:-1,100,1000,10000}" | tr ',' '\n' | awk -v max="$fits" '{ print ($1 > max ? max : $1) }' | paste -sd, -)
if $scale_only; then
  scale_phase "${1:-1,100,1000}"
  exit 0
fi
[ "$levels" = "${1:-1,100,1000,10000}" ] || echo "note: fd limit $(ulimit -n) caps the top level at $fits streams"
echo "== relay load (machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB)"
target/release/loadtest "$levels"

scale_phase 1,100,1000

echo "== token counting"
cargo bench --features ssr --bench tokens --locked

echo "== database: 1,000,000 ledger rows, dashboard queries (SQLite, and a throwaway Postgres)"
pg_port=$(free_ports 1)
pg_dir=$(mktemp -u -d /tmp/streamai-pg.XXXXXX)
TEST_DATABASE_URL=$(scripts/postgres.sh start "$pg_dir" "$pg_port") \
  cargo bench --features ssr --bench store --locked

echo "== browser rendering"
(cd end2end && npx playwright test --config bench.config.ts --reporter=list)
