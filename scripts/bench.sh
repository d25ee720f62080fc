#!/usr/bin/env bash
# Every benchmark, one command: release build and bundle sizes, the relay under load
# (C = 1, 100, 1000, 10000 streams) with SSR latency, token counting of a 100-page
# contract, and rendering a 10,000-chunk answer in Chromium. Figures go to stdout;
# BENCHMARKS.md records the latest. Everything runs on loopback and stops by itself.
#   scripts/bench.sh [LEVELS]   e.g. scripts/bench.sh 1,100,1000
set -euo pipefail
cd "$(dirname "$0")/.."
export LEPTOS_OUTPUT_NAME=streamai

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
[ "$levels" = "${1:-1,100,1000,10000}" ] || echo "note: fd limit $(ulimit -n) caps the top level at $fits streams"
echo "== relay load (machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB)"
target/release/loadtest "$levels"

echo "== token counting"
cargo bench --features ssr --bench tokens --locked

echo "== browser rendering"
(cd end2end && npx playwright test --config bench.config.ts --reporter=list)
