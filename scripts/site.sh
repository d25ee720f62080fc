#!/usr/bin/env bash
# Builds the site the tests serve, with cargo and the wasm-bindgen CLI only: the server
# binary (feature `ssr`), the browser WASM (feature `hydrate`), its JS glue, the CSS and
# the public assets, laid out as `[package.metadata.leptos]` in Cargo.toml says:
#   target/debug/streamai
#   target/site/pkg/streamai.{js,wasm,css}
#   target/site/<public/*>
#   target/site/pkg/split_*.wasm, chunk_*.wasm, __wasm_split*  (the lazy tabs)
# These are the steps `cargo leptos build --split` runs (minus minifying); the test command uses
# this script so that a first run does not have to compile cargo-leptos (~20 minutes on
# 2 cores). `cargo leptos watch` (scripts/dev.sh) and scripts/release.sh still use it.
set -euo pipefail
cd "$(dirname "$0")/.."
# leptos reads the output name at compile time: the same value as cargo-leptos sets, so
# both builders share one target/.
export LEPTOS_OUTPUT_NAME=streamai

site=target/site
pkg=$site/pkg
target_dir=${CARGO_TARGET_DIR:-target}

cargo build --locked --bin streamai --no-default-features --features ssr
# Relocations kept in the WASM: the splitter needs them to cut the lazy tabs out.
RUSTFLAGS="${RUSTFLAGS:-} -Clink-args=--emit-relocs" \
  cargo build --locked --lib --target wasm32-unknown-unknown --no-default-features --features hydrate

rm -rf "$pkg"
mkdir -p "$pkg"
# The lazy tabs (src/app/tabs.rs) into chunks of their own, with their loader and
# manifest, in pkg/; the main module for wasm-bindgen beside the input.
main_wasm=$(streamai-wasm-split "$target_dir/wasm32-unknown-unknown/debug/streamai.wasm" "$pkg" streamai)
wasm-bindgen --target web --no-typescript --keep-lld-exports --no-demangle \
  --out-dir "$pkg" --out-name streamai "$main_wasm"
# The page's hydration script loads `<output-name>.wasm` (leptos names it so whenever
# LEPTOS_OUTPUT_NAME was set at compile time), as cargo-leptos writes it.
mv "$pkg/streamai_bg.wasm" "$pkg/streamai.wasm"
cp style/main.css "$pkg/streamai.css"
cp -R public/. "$site/"
printf 'site: %s (wasm %s bytes, js %s bytes)\n' "$site" \
  "$(wc -c <"$pkg/streamai.wasm")" "$(wc -c <"$pkg/streamai.js")"
