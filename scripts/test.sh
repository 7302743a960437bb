#!/usr/bin/env bash
# Sets up and runs the whole test suite: formatting, lints for native and wasm32, unit
# and kernel tests on lavapipe, and end-to-end tests with real processes, real WebRTC
# and real headless Chromium with WebGPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh
AIORTC_VERSION=1.16.0
aiortc_python="$STARLING_TOOLS/aiortc/bin/python"
if [[ "$(output_of "$aiortc_python" -c 'import aiortc; print(aiortc.__version__)')" != "$AIORTC_VERSION" ]]; then
  # A third WebRTC stack for relay-server/tests/aiortc.rs (required here: see
  # STARLING_REQUIRE_AIORTC): it names its certificate under three hash algorithms.
  say "installing aiortc $AIORTC_VERSION (pip, in a venv)"
  python3 -m venv "$STARLING_TOOLS/aiortc"
  "$STARLING_TOOLS/aiortc/bin/pip" install --quiet "aiortc==$AIORTC_VERSION" >&2
fi
export STARLING_REQUIRE_AIORTC=1
# A run from a fresh clone gains nothing from incremental caches, which only take disk.
export CARGO_INCREMENTAL=0
step() { echo; echo "== $*" >&2; }
step "format"
cargo fmt --all --check
step "lint (native)"
cargo clippy --workspace --all-targets -- -D warnings
step "lint (wasm32)"
cargo clippy --target wasm32-unknown-unknown -p starling-protocol -p starling-api -p starling-kernels -p starling-client -p starling-web-ui -- -D warnings
step "build the web UI"
scripts/build-ui.sh
step "build binaries for the end-to-end tests"
cargo build --workspace --bins
step "tests"
log="$(mktemp)"
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
# One closing line with the totals over every test binary (cargo prints one per binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "\n%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
step "fuzz the REST API from its OpenAPI document (schemathesis)"
scripts/api-fuzz.sh
