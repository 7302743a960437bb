#!/usr/bin/env bash
# Installs what Starling needs to build, run and test, idempotently: Chromium and
# chromedriver, Mesa's software Vulkan (lavapipe), brotli (build-ui.sh precompresses the
# app), coturn and nftables (the NAT-traversal tests run their own turnserver, and a
# network namespace that drops UDP), the wasm32 target, the wasm-bindgen CLI at exactly the crate's pinned version,
# wasm-split-cli (build-ui.sh cuts the widget's engine into a module of its own) and npm's
# binaryen (wasm-opt). Not Trunk: scripts/build-ui.sh does what Trunk.toml
# describes with wasm-bindgen and wasm-opt, and Trunk's own build took 20 of a fresh
# machine's 42 minutes to a first page. (The test suite's own tools, aiortc and
# schemathesis, are installed by scripts/test.sh and scripts/api-fuzz.sh.)
# Source it (`. scripts/setup.sh`) to get the tools on PATH.
set -euo pipefail

STARLING_TOOLS="${STARLING_TOOLS:-$HOME/.cache/starling/tools}"
BINARYEN_VERSION=132.0.0
# Reads the split points of Leptos's wasm_split_helpers (0.2.x in Cargo.lock).
WASM_SPLIT_VERSION=0.2.4
# e2e/tests/accessibility.rs injects axe-core's axe.min.js into every page.
AXE_CORE_VERSION=4.11.0
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wbg_version="$(sed -n 's/^wasm-bindgen = "=\(.*\)"$/\1/p' "$root/Cargo.toml")"
[ -n "$wbg_version" ] || { echo "setup: cannot read the pinned wasm-bindgen version from Cargo.toml" >&2; exit 1; }

say() { echo "setup: $*" >&2; }
# `cmd | grep -q` under pipefail fails when grep exits early and cmd gets SIGPIPE, so
# outputs are captured first and matched afterwards.
output_of() { "$@" 2>/dev/null || true; }
sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
# nginx: e2e/tests/https_relay.rs runs the README's TLS proxy block in front of a relay.
# postgresql: the storage tests and the PostgreSQL e2e tests run a server of their own.
for pkg in chromium chromium-driver firefox-esr mesa-vulkan-drivers libvulkan1 python3-venv brotli coturn nftables iproute2 util-linux nginx postgresql; do
  [[ "$(output_of dpkg-query -W -f='${Status}' "$pkg")" == *"install ok installed"* ]] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} (apt)"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! grep -qx wasm32-unknown-unknown <<<"$(output_of rustup target list --installed)"; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown >&2
fi

mkdir -p "$STARLING_TOOLS/bin"
if [[ "$(output_of "$STARLING_TOOLS/bin/wasm-bindgen" --version)" != "wasm-bindgen $wbg_version" ]]; then
  # Without --locked: its lockfile has named crate versions the registry lacked.
  say "installing wasm-bindgen-cli $wbg_version (once)"
  cargo install wasm-bindgen-cli --version "$wbg_version" --root "$STARLING_TOOLS" --force >&2
fi
if ! grep -q "^\"wasm_split_cli_support $WASM_SPLIT_VERSION " "$STARLING_TOOLS/.crates.toml" 2>/dev/null \
  || [ ! -x "$STARLING_TOOLS/bin/wasm-split-cli" ]; then
  say "installing wasm-split-cli $WASM_SPLIT_VERSION (once)"
  cargo install --locked wasm_split_cli_support --version "$WASM_SPLIT_VERSION" \
    --features build-binary --root "$STARLING_TOOLS" --force >&2
fi
wasm_opt="$STARLING_TOOLS/npm/node_modules/.bin/wasm-opt"
if [[ "$(output_of "$wasm_opt" --version)" != *"version_${BINARYEN_VERSION%%.*}"* ]]; then
  # Debian's binaryen (108) produces wasm that breaks the app; npm's 132 does not.
  say "installing binaryen $BINARYEN_VERSION (npm)"
  mkdir -p "$STARLING_TOOLS/npm"
  npm install --prefix "$STARLING_TOOLS/npm" --no-audit --no-fund "binaryen@$BINARYEN_VERSION" >&2
fi

axe_js="$STARLING_TOOLS/npm/node_modules/axe-core/axe.min.js"
if [[ "$(output_of sed -n 's/.*"version": "\(.*\)".*/\1/p' "$STARLING_TOOLS/npm/node_modules/axe-core/package.json")" != "$AXE_CORE_VERSION" || ! -f "$axe_js" ]]; then
  say "installing axe-core $AXE_CORE_VERSION (npm)"
  mkdir -p "$STARLING_TOOLS/npm"
  npm install --prefix "$STARLING_TOOLS/npm" --no-audit --no-fund "axe-core@$AXE_CORE_VERSION" >&2
fi

export PATH="$STARLING_TOOLS/bin:$STARLING_TOOLS/npm/node_modules/.bin:$PATH"
# lavapipe wants a runtime dir; without one it prints a harmless but noisy error.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/starling-xdg-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
