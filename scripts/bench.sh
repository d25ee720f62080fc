#!/usr/bin/env bash
# Every benchmark, one command: release build and bundle sizes, the relay under load
# (C = 1, 100, 1000, 10000 streams) with SSR latency, chunk gaps beside 1 MiB prompts, the
# ledger on and off, token counting of a 100-page contract, the database with a million
# ledger rows, and rendering a 10,000-chunk answer in Chromium. Figures go to stdout;
# BENCHMARKS.md records the latest. Everything runs on loopback and stops by itself.
# Durable streams and scale-out (`loadtest --scale`): the relay with its frame log in
# memory vs in Redis, resume latency, and three instances vs one behind nginx, on a
# throwaway Redis and nginx started here.
# Peers (`loadtest --peers`): this relay beside LiteLLM's proxy, installed from PyPI into
# a virtualenv under target/ and run with its production settings, on one fake upstream.
#   scripts/bench.sh [LEVELS]                 e.g. scripts/bench.sh 1,100,1000
#   scripts/bench.sh --scale-only [LEVELS]    builds, then only the scale-out phase
#                                             (LEVELS for its Redis-cost part; default 1,100,1000)
#   scripts/bench.sh --peers-only [LEVELS]    builds the three binaries, then only the peer
#                                             comparison (default 100,1000)
set -euo pipefail
cd "$(dirname "$0")/.."
export LEPTOS_OUTPUT_NAME=streamai

scale_only=false
peers_only=false
case "${1:-}" in
  --scale-only) scale_only=true; shift ;;
  --peers-only) peers_only=true; shift ;;
esac

# LiteLLM, the peer: 1.108.7 is the newest release whose `[proxy]` extra installs here.
litellm_version=1.108.7
litellm_venv=$PWD/target/bench-venv-litellm-$litellm_version

# Throwaway services and the processes `loadtest --scale` starts, stopped however this
# script ends (success, failure, Ctrl-C): one trap for all of them. Each variable is
# set just before its service starts.
pg_dir=
redis_dir=
nginx_dirs=()
loadtest_dir=
venv_tmp=
litellm_pid=
litellm_dir=
# A process and its descendants, from /proc: LiteLLM's master and its uvicorn workers.
proc_tree() {
  local child
  echo "$1"
  # shellcheck disable=SC2013 # the file is pids separated by spaces
  for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do proc_tree "$child"; done
}
# Of those pids, the ones still running LiteLLM's virtualenv (never a reused pid).
litellm_pids() {
  local pid
  for pid in "$@"; do
    if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$litellm_venv/"; then echo "$pid"; fi
  done
}
stop_litellm() {
  [ -n "$litellm_pid" ] || return 0
  local pids i
  # shellcheck disable=SC2046 # one pid per word
  pids=$(litellm_pids $(proc_tree "$litellm_pid"))
  # SIGTERM to the master and every worker at once (a worker alone would wait for its
  # open streams to end); whatever is left after 10 s gets SIGKILL.
  # shellcheck disable=SC2086
  [ -z "$pids" ] || kill $pids 2>/dev/null || true
  for i in $(seq 100); do
    # shellcheck disable=SC2086
    [ -n "$(litellm_pids $pids)" ] || break
    sleep 0.1
  done
  # shellcheck disable=SC2086,SC2046
  [ -z "$(litellm_pids $pids)" ] || kill -9 $(litellm_pids $pids) 2>/dev/null || true
  litellm_pid=
  if [ -n "$litellm_dir" ]; then rm -rf "$litellm_dir"; fi
  litellm_dir=
}
stop_services() {
  stop_litellm
  if [ -n "$venv_tmp" ]; then rm -rf "$venv_tmp"; fi
  venv_tmp=
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

# LiteLLM's proxy in a virtualenv. Cached: the virtualenv is kept under target/, so a
# second run skips the install (minutes here); it is built in a throwaway directory
# beside it and moved into place only when complete, so a cut-off install is never taken
# for a cached one. It is run as `bin/python -m …`, which works after the move (the
# scripts in its bin/ keep the old path in their `#!`).
ensure_litellm() {
  if [ -f "$litellm_venv/.complete" ]; then
    echo "LiteLLM $litellm_version: cached virtualenv $litellm_venv"
    return
  fi
  local started=$SECONDS
  venv_tmp=$(mktemp -d "$PWD/target/bench-venv-litellm.XXXXXX")
  if ! python3 -m venv "$venv_tmp/venv"; then
    # Debian's python3 makes virtualenvs only with python3-venv.
    apt-get install -y python3-venv >/dev/null
    /usr/bin/python3 -m venv "$venv_tmp/venv"
  fi
  "$venv_tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "litellm[proxy]==$litellm_version"
  touch "$venv_tmp/venv/.complete"
  rm -rf "$litellm_venv"
  mv "$venv_tmp/venv" "$litellm_venv"
  rm -rf "$venv_tmp"
  venv_tmp=
  echo "LiteLLM $litellm_version: installed into $litellm_venv in $((SECONDS - started)) s"
}

# Peers: LiteLLM's proxy on a free loopback port, pointed at the fake upstream that
# `loadtest --peers` starts on the port given here; loadtest also starts our server,
# measures the fake straight, through ours and through LiteLLM, and prints one table per
# level. LiteLLM runs with the production settings of its own docs, "Best Practices for
# Production" (https://docs.litellm.ai/docs/proxy/prod): a master key, spend and error
# logs to the DB off, `request_timeout: 600`, `set_verbose: False`, `json_logs: true`,
# and LITELLM_LOG=ERROR; one worker per core (`--num_workers $(nproc)`, CLI doc
# https://docs.litellm.ai/docs/proxy/cli); no database (DATABASE_URL unset), no
# callbacks, no alerting. LITELLM_LOCAL_MODEL_COST_MAP=True: its model price map comes
# from the package instead of GitHub (nothing leaves loopback); LITELLM_MODE=PRODUCTION:
# no .env file is read. The trap stops it, master and workers, however this script ends.
peers_phase() {
  local levels=$1 ports key i
  echo "== peers: streamai beside LiteLLM $litellm_version (machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB; $(date -u '+%Y-%m-%d %H:%M UTC'))"
  ensure_litellm
  read -r -a ports <<<"$(free_ports 3)" # fake, streamai, LiteLLM
  litellm_dir=$(mktemp -d /tmp/streamai-litellm.XXXXXX)
  key=sk-bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
  cat >"$litellm_dir/config.yaml" <<EOF
model_list:
  - model_name: fake-model
    litellm_params:
      model: openai/fake-model
      api_base: http://127.0.0.1:${ports[0]}/v1
      api_key: sk-fake-upstream-key
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  disable_spend_logs: True
  disable_error_logs: True
litellm_settings:
  request_timeout: 600
  set_verbose: False
  json_logs: true
EOF
  (
    cd "$litellm_dir"
    exec env -u DATABASE_URL LITELLM_MASTER_KEY="$key" LITELLM_LOG=ERROR \
      LITELLM_MODE=PRODUCTION LITELLM_LOCAL_MODEL_COST_MAP=True \
      "$litellm_venv/bin/python" -m litellm.proxy.proxy_cli --config config.yaml \
      --host 127.0.0.1 --port "${ports[2]}" --num_workers "$(nproc)" >log 2>&1
  ) &
  litellm_pid=$!
  for i in $(seq 600); do
    if curl -sf -o /dev/null "http://127.0.0.1:${ports[2]}/health/liveliness"; then break; fi
    if ! kill -0 "$litellm_pid" 2>/dev/null || [ "$i" = 600 ]; then
      echo "LiteLLM did not come up within 300 s; its log:" >&2
      tail -n 30 "$litellm_dir/log" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "LiteLLM: up on 127.0.0.1:${ports[2]} with $(nproc) workers after $i polls of 0.5 s"
  loadtest_dir=$(mktemp -d /tmp/streamai-loadtest-peers.XXXXXX)
  LOADTEST_PORTS="${ports[0]},${ports[1]}" \
    LOADTEST_LITELLM="${ports[2]}:$litellm_pid" \
    LOADTEST_LITELLM_KEY=$key \
    LOADTEST_LITELLM_LABEL="LiteLLM $litellm_version" \
    LOADTEST_DIR=$loadtest_dir \
    target/release/loadtest --peers "$levels"
  stop_services
}

if $peers_only; then
  # Only the relay's binaries: the peer phase needs neither the WASM bundle nor Chromium.
  cargo build --release --features ssr --bin streamai --bin fake-upstream --bin loadtest --locked
else
  scripts/setup.sh --test --release
  scripts/release.sh
  cargo build --release --features ssr --bin fake-upstream --bin loadtest --locked
fi

# The server holds a socket per stream (the browser side; the provider side is one HTTP/2
# connection per 100 streams; two sockets per stream with LOADTEST_UPSTREAM_HTTP2=0). Raise
# the soft fd limit to the hard one; where the hard limit cannot hold 10,000 streams, the
# top level is capped to what fits, and said so.
hard=$(ulimit -Hn)
ulimit -n "$hard" 2>/dev/null || true
if [ "${LOADTEST_UPSTREAM_HTTP2:-1}" = 0 ]; then per_100=200; else per_100=101; fi
fits=$(( ( $(ulimit -n) - 500 ) * 100 / per_100 / 1000 * 1000 ))
levels=$(echo "${1:-1,100,1000,10000}" | tr ',' '\n' | awk -v max="$fits" '{ print ($1 > max ? max : $1) }' | paste -sd, -)
if $scale_only; then
  scale_phase "${1:-1,100,1000}"
  exit 0
fi
if $peers_only; then
  peers_phase "${1:-100,1000}"
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

peers_phase 100,1000
