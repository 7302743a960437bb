#!/usr/bin/env bash
# Starts a local Starling network of several relays, for trying one: PostgreSQL (Debian's
# package) in a temporary directory, three relays on it (ports PORT+1..), and nginx in
# front on PORT (deploy/nginx-cluster.conf). Prints the balancer's URL; Ctrl-C stops
# everything and removes the temporary directory. Environment: STARLING_CLUSTER_PORT
# (default 8080), STARLING_RELAYS (default 3). Extra arguments go to every relay.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh
scripts/build-ui.sh
cargo build --release -p starling-relay --bins
root=$PWD
port=${STARLING_CLUSTER_PORT:-8080}
relays=${STARLING_RELAYS:-3}
work=$(mktemp -d /tmp/starling-cluster.XXXXXX)
# PostgreSQL's own user must reach its directory inside.
chmod 755 "$work"
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
if [ "$(id -u)" = 0 ]; then
  as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
else
  as_pg() { "$@"; }
fi
pids=()
stop() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  as_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap stop EXIT INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

mkdir -p "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$work/pg"
as_pg "$pg_bin/initdb" -D "$work/pg/data" -U starling --auth=trust -E UTF8 >/dev/null
pg_port=$(free_port)
as_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/server.log" -w \
  -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
"$pg_bin/psql" -q -h 127.0.0.1 -p "$pg_port" -U starling -d postgres -c 'CREATE DATABASE starling'
database="postgres://starling@127.0.0.1:$pg_port/starling"

# One data directory for all: on one machine the relays share the ledger's key and the
# key that seals job data (on several machines, copy relay.key and job-keys.key).
upstreams=""
for i in $(seq 1 "$relays"); do
  relay_port=$((port + i))
  log="$work/relay-$i.log"
  target/release/relay-server --listen "127.0.0.1:$relay_port" --data-dir "$work/relays" \
    --database "$database" --trusted-proxy 127.0.0.1 \
    --app-dir "$root/dist" --public-dir "$root/public" "$@" >"$log" 2>"$work/relay-$i.err" &
  pids+=($!)
  # The first relay migrates the database and makes the keys; the others wait for it.
  for _ in $(seq 1 300); do
    grep -q "listening on" "$log" && break
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/relay-$i.err" >&2; exit 1; }
    sleep 0.1
  done
  upstreams+="        server 127.0.0.1:$relay_port max_fails=1 fail_timeout=3s;"$'\n'
done

mkdir -p "$work/nginx"
sed -e "s|@DIR@|$work/nginx|g" -e "s|@LISTEN@|127.0.0.1:$port|" deploy/nginx-cluster.conf |
  awk -v up="$upstreams" '/@UPSTREAMS@/ { printf "%s", up; next } { print }' >"$work/nginx/nginx.conf"
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off; master_process off;' &
pids+=($!)
sleep 0.5
kill -0 "${pids[-1]}" || { cat "$work/nginx/error.log" >&2; exit 1; }

echo "Starling network of $relays relays on PostgreSQL behind nginx: http://127.0.0.1:$port"
sed -n 's/^development API key: /development API key: /p' "$work/relay-1.log"
echo "Relays on ports $((port + 1))-$((port + relays)), logs in $work; Ctrl-C stops it all." >&2
# Until Ctrl-C: a relay killed to watch its volunteers move on does not stop the rest.
wait "${pids[@]}" || true
