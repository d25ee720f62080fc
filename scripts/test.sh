#!/usr/bin/env bash
# Installs what is missing, then runs every test tier, stopping at the first failure:
# formatting, clippy (server and browser, warnings denied), unit + integration tests
# (the database tests on SQLite and on a throwaway Postgres started here; the shared-state
# tests on a throwaway Redis; the multi-instance test behind a throwaway nginx), and the
# Playwright suite in Debian's Chromium against the real server.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --test

# cargo-leptos compiles with LEPTOS_OUTPUT_NAME set, and leptos reads it at compile time;
# setting it here too lets every cargo command below reuse the same target/ artifacts.
export LEPTOS_OUTPUT_NAME=streamai

step() {
  local name=$1
  shift
  printf '\n\033[1;34m== %s\033[0m\n' "$name"
  local start=$SECONDS
  "$@"
  printf '\033[1;32m== %s: ok (%ss)\033[0m\n' "$name" "$((SECONDS - start))"
}

step "format" cargo fmt --check
step "clippy: server" cargo clippy --features ssr --all-targets --locked -- -D warnings
step "clippy: browser" cargo clippy --lib --features hydrate --target wasm32-unknown-unknown --locked -- -D warnings
# Throwaway services on free loopback ports, stopped however the run ends: Postgres and
# Redis for the store tests, and nginx in front of three app instances for the
# multi-instance test (which starts the instances itself, on TEST_INSTANCE_PORTS).
# One trap for all of them: a second `trap ... EXIT` would replace the first.
pg_dir=$(mktemp -u -d /tmp/streamai-pg.XXXXXX)
redis_dir=$(mktemp -u -d /tmp/streamai-redis.XXXXXX)
nginx_dir=$(mktemp -u -d /tmp/streamai-nginx.XXXXXX)
stop_services() {
  scripts/nginx.sh stop "$nginx_dir" || true
  scripts/redis.sh stop "$redis_dir" || true
  scripts/postgres.sh stop "$pg_dir" || true
}
trap stop_services EXIT
# N free loopback ports, all different (held together while they are picked). Below the
# kernel's ephemeral range: the instance ports stay unused until the multi-instance test
# runs, and a port from that range could meanwhile become the local end of some
# outgoing connection and make the instance's bind fail.
free_ports() {
  python3 - "$1" <<'PY'
import random, socket, sys
with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
    ephemeral_low = int(f.read().split()[0])
held = []
while len(held) < int(sys.argv[1]):
    s = socket.socket()
    try:
        # Port 0 (the kernel picks, from the ephemeral range) if there is no room below.
        s.bind(("127.0.0.1", random.randrange(10000, ephemeral_low) if ephemeral_low > 11000 else 0))
        held.append(s)
    except OSError:
        s.close()
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
}
pg_port=$(free_ports 1)
TEST_DATABASE_URL=$(scripts/postgres.sh start "$pg_dir" "$pg_port")
export TEST_DATABASE_URL
# Picked after Postgres listens, so none of them is its port.
read -r redis_port nginx_port instance_1 instance_2 instance_3 < <(free_ports 5)
TEST_REDIS_URL=$(scripts/redis.sh start "$redis_dir" "$redis_port")
TEST_NGINX_URL=$(scripts/nginx.sh start "$nginx_dir" "$nginx_port" "$instance_1" "$instance_2" "$instance_3")
TEST_INSTANCE_PORTS=$instance_1,$instance_2,$instance_3
TEST_SCALE_REQUIRED=1
export TEST_REDIS_URL TEST_NGINX_URL TEST_INSTANCE_PORTS TEST_SCALE_REQUIRED

step "unit and integration tests" cargo test --features ssr --locked
step "build the site" cargo leptos build --split
step "build the fake upstream" cargo build --features ssr --bin fake-upstream --locked
step "browser tests" bash -c 'cd end2end && npx playwright test'
