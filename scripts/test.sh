#!/usr/bin/env bash
# Installs what is missing, then runs every test tier, stopping at the first failure:
# formatting, clippy (server and browser, warnings denied), unit + integration tests
# (the database tests on SQLite and on a throwaway Postgres started here), and the
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
# A throwaway Postgres on a free loopback port, stopped however the run ends.
pg_dir=$(mktemp -u -d /tmp/streamai-pg.XXXXXX)
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
trap 'scripts/postgres.sh stop "$pg_dir"' EXIT
TEST_DATABASE_URL=$(scripts/postgres.sh start "$pg_dir" "$pg_port")
export TEST_DATABASE_URL

step "unit and integration tests" cargo test --features ssr --locked
step "build the site" cargo leptos build
step "build the fake upstream" cargo build --features ssr --bin fake-upstream --locked
step "browser tests" bash -c 'cd end2end && npx playwright test'
