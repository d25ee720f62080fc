#!/usr/bin/env bash
# Installs what is missing, then runs the app with live reload on http://127.0.0.1:3000.
# With no API key in the environment or .env, the built-in offline demo model answers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
# --split: the lazy tabs (src/app/tabs.rs) need their own WASM chunks; without it the
# page cannot load its WASM.
exec cargo leptos watch --split "$@"
