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

# 10,000 streams need ~40,000 sockets across the three processes.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "== relay load (machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB)"
target/release/loadtest "${1:-1,100,1000,10000}"

echo "== token counting"
cargo bench --features ssr --bench tokens --locked

echo "== browser rendering"
(cd end2end && npx playwright test --config bench.config.ts --reporter=list)
