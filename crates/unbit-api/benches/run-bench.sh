#!/usr/bin/env bash
# Runs the API benchmark (examples/api-bench.rs) on SQLite and on a throwaway PostgreSQL cluster
# started on a free loopback port and removed afterwards. Prints one markdown table per engine.
#   crates/unbit-api/benches/run-bench.sh [--seconds 10] [--concurrency 16]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
cargo build -q --release -p unbit-api --example api-bench --manifest-path "$root/Cargo.toml"
bench="$CARGO_TARGET_DIR/release/examples/api-bench"

work="$(mktemp -d /tmp/unbit-api-bench.XXXXXX)"
pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
pg_started=""
cleanup() {
  # pg_ctl stops the postmaster by the PID in its data directory.
  if [[ -n "$pg_started" ]]; then runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bench" --db "$work/bench.db" "$@"

[[ -x "$pgbin/postgres" ]] || { echo "PostgreSQL is missing: run scripts/install-deps.sh" >&2; exit 1; }
chown postgres "$work"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
runuser -u postgres -- "$pgbin/initdb" -D "$work/pg" -U postgres --auth=trust -E UTF8 >/dev/null
pg_started=1
runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
  -o "-p $port -h 127.0.0.1 -k $work" start >/dev/null
"$pgbin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -c "CREATE DATABASE bench"
"$bench" --db "postgres://postgres@127.0.0.1:$port/bench" "$@"
