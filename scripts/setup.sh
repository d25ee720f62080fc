#!/usr/bin/env bash
# Installs what is missing, and nothing that is already there. Idempotent.
#   scripts/setup.sh           the build tools: wasm32 target, wasm-bindgen CLI, the WASM
#                              splitter (tools/wasm-split)
#   scripts/setup.sh --dev     also cargo-leptos (`cargo leptos watch`: scripts/dev.sh)
#   scripts/setup.sh --test    also Chromium, Postgres, Redis and nginx (Debian packages) and
#                              the end2end npm packages (the tests build the site with
#                              scripts/site.sh, so they never wait for cargo-leptos)
#   scripts/setup.sh --release also cargo-leptos and wasm-opt (the npm `binaryen` package)
# Everything comes from the package registries (crates.io, npm, Debian); nothing is
# downloaded from elsewhere, so cargo-leptos is built with its `no_downloads` feature.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_LEPTOS_VERSION=0.3.10
# The wasm-bindgen CLI must be exactly the version of the wasm-bindgen crate in Cargo.lock
# (pinned with `=` in Cargo.toml). To bump: change both the pin in Cargo.toml and nothing
# here; `cargo update -p wasm-bindgen --precise X`, then rerun this script.
WASM_BINDGEN_VERSION=$(sed -n '/^name = "wasm-bindgen"$/{n;s/^version = "\(.*\)"$/\1/p;}' Cargo.lock)

want_dev=false
want_test=false
want_release=false
for arg in "$@"; do
  case "$arg" in
    --dev) want_dev=true ;;
    --test) want_test=true ;;
    --release) want_release=true ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

if ! command -v cargo >/dev/null; then
  echo "setup.sh: cargo is missing; install Rust with rustup first (https://rustup.rs)" >&2
  exit 1
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
for component in rustfmt clippy; do
  if ! rustup component list --installed | grep -q "^$component"; then
    say "adding $component"
    rustup component add "$component"
  fi
done

# The tools' own release profiles (fat LTO, one codegen unit) made the first run take
# ~27 minutes on 2 cores. They are build tools, not hot paths: compile them with a
# quick profile instead (cargo applies CARGO_PROFILE_RELEASE_* to `cargo install`).
quick_install() {
  CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 \
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
  CARGO_PROFILE_RELEASE_DEBUG=0 \
  CARGO_PROFILE_RELEASE_STRIP=true \
  CARGO_PROFILE_RELEASE_INCREMENTAL=false \
    cargo install "$@"
}

if ($want_dev || $want_release) && ! cargo leptos --version 2>/dev/null | grep -q "$CARGO_LEPTOS_VERSION"; then
  say "installing cargo-leptos $CARGO_LEPTOS_VERSION (once; ~20 min on 2 cores: it bundles swc, lightningcss and OpenSSL)"
  quick_install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked --features no_downloads
fi

if ! wasm-bindgen --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
  say "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (matches Cargo.lock)"
  quick_install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --locked
fi

# The WASM splitter of scripts/site.sh (the lazy tabs' chunks): a few lines of ours around
# the library cargo-leptos uses; its own version is the file's hash, so an edit reinstalls it.
split_tool_version="0.1.0+$(cat tools/wasm-split/Cargo.toml tools/wasm-split/Cargo.lock tools/wasm-split/src/main.rs | sha256sum | cut -c1-12)"
if [ "$(cat "${CARGO_HOME:-$HOME/.cargo}/streamai-wasm-split.version" 2>/dev/null)" != "$split_tool_version" ] \
  || ! command -v streamai-wasm-split >/dev/null; then
  say "installing the WASM splitter (tools/wasm-split, ~1 min)"
  CARGO_TARGET_DIR=target/tools cargo install --path tools/wasm-split --locked --force --quiet
  echo "$split_tool_version" >"${CARGO_HOME:-$HOME/.cargo}/streamai-wasm-split.version"
fi

# The package lists are refreshed once per run, on the first install.
apt_updated=false
apt_install() {
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
  fi
  if ! $apt_updated; then
    "${sudo[@]}" apt-get update -qq
    apt_updated=true
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

if $want_test || $want_release; then
  if ! command -v npm >/dev/null; then
    say "installing Node.js and npm (Debian)"
    apt_install nodejs npm
  fi
  if [ ! -d end2end/node_modules ] || [ end2end/package-lock.json -nt end2end/node_modules/.package-lock.json ]; then
    say "installing end2end npm packages from the lockfile"
    (cd end2end && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
  fi
fi

if $want_test; then
  # Only the missing packages, in one apt-get run (one `apt-get update`, none when
  # nothing is missing).
  # postgresql, redis-server, nginx: the throwaway services of the tests
  # (scripts/postgres.sh, scripts/redis.sh, scripts/nginx.sh); the packages' own
  # services are not used.
  missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  # grep without -q: with -q it stops at the first match, fc-list may die of SIGPIPE, and
  # pipefail would call the font missing.
  fc-list 2>/dev/null | grep -i "WenQuanYi Micro Hei" >/dev/null || missing+=(fonts-wqy-microhei)
  fc-list 2>/dev/null | grep -i "Noto Color Emoji" >/dev/null || missing+=(fonts-noto-color-emoji)
  [ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql)
  [ -x /usr/bin/redis-server ] || missing+=(redis-server)
  # redis-cli, which scripts/redis.sh needs too (redis-server depends on it anyway).
  [ -x /usr/bin/redis-cli ] || missing+=(redis-tools)
  [ -x /usr/sbin/nginx ] || missing+=(nginx)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (Debian packages)"
    apt_install "${missing[@]}"
  fi
fi

say "ready"
