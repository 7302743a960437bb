#!/usr/bin/env bash
# Sets up, builds the web UI and the relay, and runs Starling on an embedded SQLite
# database. Environment: STARLING_LISTEN (default 127.0.0.1:8080), STARLING_DATA_DIR
# (default .data). Extra arguments go to relay-server.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh
scripts/build-ui.sh
cargo build --release -p starling-relay --bins
echo "Starting the relay; open the URL below in a browser (Ctrl-C stops it)." >&2
exec target/release/relay-server \
  --listen "${STARLING_LISTEN:-127.0.0.1:8080}" \
  --data-dir "${STARLING_DATA_DIR:-.data}" "$@"
