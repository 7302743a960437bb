#!/usr/bin/env bash
# Builds the web UI into dist/ with Trunk, offline: every tool comes from setup.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
trunk build --offline --skip-version-check >&2
