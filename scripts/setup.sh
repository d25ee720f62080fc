#!/usr/bin/env bash
# Installs what is missing, and nothing that is already there. Idempotent.
#   scripts/setup.sh          the build tools: wasm32 target, cargo-leptos, wasm-bindgen CLI
#   scripts/setup.sh --test   also Chromium (Debian package) and the end2end npm packages
#   scripts/setup.sh --release also wasm-opt (the npm `binaryen` package) for release builds
# Everything comes from the package registries (crates.io, npm, Debian); nothing is
# downloaded from elsewhere, so cargo-leptos is built with its `no_downloads` feature.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_LEPTOS_VERSION=0.3.10
# The wasm-bindgen CLI must be exactly the version of the wasm-bindgen crate in Cargo.lock
# (pinned with `=` in Cargo.toml). To bump: change both the pin in Cargo.toml and nothing
# here; `cargo update -p wasm-bindgen --precise X`, then rerun this script.
WASM_BINDGEN_VERSION=$(sed -n '/^name = "wasm-bindgen"$/{n;s/^version = "\(.*\)"$/\1/p;}' Cargo.lock)

want_test=false
want_release=false
for arg in "$@"; do
  case "$arg" in
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

if ! cargo leptos --version 2>/dev/null | grep -q "$CARGO_LEPTOS_VERSION"; then
  say "installing cargo-leptos $CARGO_LEPTOS_VERSION (a few minutes, once)"
  quick_install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked --features no_downloads
fi

if ! wasm-bindgen --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
  say "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (matches Cargo.lock)"
  quick_install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --locked
fi

apt_install() {
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  fi
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

if $want_test && { [ ! -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -qi "WenQuanYi Micro Hei" || ! fc-list 2>/dev/null | grep -qi "Noto Color Emoji" || [ ! -x /usr/lib/postgresql/15/bin/postgres ]; }; then
  # postgresql: the throwaway server of the store tests (scripts/postgres.sh); its own
  # cluster service is not used.
  say "installing Chromium, a Chinese font and Postgres (Debian packages)"
  apt_install chromium fonts-wqy-microhei fonts-noto-color-emoji postgresql
fi

say "ready"
