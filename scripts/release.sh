#!/usr/bin/env bash
# Builds the release site (server binary + optimised WASM) and prints the bundle sizes.
# wasm-opt comes from the npm `binaryen` package (installed by setup.sh --release), so
# nothing is downloaded from outside the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --release
export PATH="$PWD/end2end/node_modules/.bin:$PATH"
# --split: the lazy tabs (src/app/tabs.rs) go into chunks of their own (pkg/split_*.wasm,
# pkg/chunk_*.wasm), fetched when a tab is first opened.
cargo leptos build --release --split "$@"
wasm=target/site/pkg/streamai.wasm
js=target/site/pkg/streamai.js
printf 'release WASM: %s bytes raw, %s bytes gzip -9\n' "$(wc -c < "$wasm")" "$(gzip -9 -c "$wasm" | wc -c)"
printf 'release JS:   %s bytes raw, %s bytes gzip -9\n' "$(wc -c < "$js")" "$(gzip -9 -c "$js" | wc -c)"
for chunk in target/site/pkg/split_*.wasm target/site/pkg/chunk_*.wasm; do
  printf 'lazy chunk %s: %s bytes raw, %s bytes gzip -9\n' "${chunk##*/}" "$(wc -c < "$chunk")" "$(gzip -9 -c "$chunk" | wc -c)"
done
echo "server binary: target/release/streamai (run it from the repo root, beside Leptos.toml)"
