#!/usr/bin/env bash
# OpenAPI-driven fuzz test of unbit-api: schemathesis generates requests for every operation
# in /api/openapi.json (valid and invalid bodies, parameters, ids) against a locally started,
# seeded API and fails on any 5xx answer. Run from anywhere; exits non-zero on a finding.
#   crates/unbit-api/tests/run-fuzz.sh            (MAX_EXAMPLES=40 by default)
#   MAX_EXAMPLES=200 crates/unbit-api/tests/run-fuzz.sh
# `cargo test -p unbit-api` runs it too (tests/api/fuzz.rs, MAX_EXAMPLES=20).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

if ! command -v schemathesis >/dev/null 2>&1; then
  echo "run-fuzz: schemathesis is missing: run scripts/install-deps.sh" >&2
  exit 1
fi

# The Rust test (tests/api/fuzz.rs) passes the binary it was built with.
if [[ -n "${UNBIT_API_BIN:-}" ]]; then
  bin="$UNBIT_API_BIN"
else
  cargo build -q -p unbit-api --manifest-path "$root/Cargo.toml"
  bin="$CARGO_TARGET_DIR/debug/unbit-api"
fi

work="$(mktemp -d /tmp/unbit-api-fuzz.XXXXXX)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

db="$work/api.db"
admin() { "$bin" admin --db "$db" "$@"; }
admin server add --name node1 --address 192.0.2.10 --memory 100000 --storage 1000000 >/dev/null
admin server add --name dedicated --address 192.0.2.20 --memory 100000 --storage 1000000 >/dev/null
admin customer add --username fuzz --password fuzz-password >/dev/null
admin server set-owner --name dedicated --customer fuzz
admin distro add --name "Debian 12" --path bookworm >/dev/null
for i in 1 2 3; do admin container add --customer fuzz --server node1 --name "c$i" --memory 100 --storage 100 >/dev/null; done
admin container add --customer fuzz --server dedicated --name d1 --memory 100 --storage 100 >/dev/null
admin domain map --customer fuzz --name fuzz.example.org >/dev/null
admin news add --content "hello" --public

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
# No DNS server answers on this port: domain proofs fail fast with 403, never 5xx.
"$bin" serve --db "$db" --listen "127.0.0.1:$port" --dns-resolver 127.0.0.1:9 >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/api/openapi.json" >/dev/null && break
  sleep 0.1
done

status=0
schemathesis run "http://127.0.0.1:$port/api/openapi.json" \
  --url "http://127.0.0.1:$port/api" \
  --auth fuzz:fuzz-password \
  --checks not_a_server_error \
  --max-examples "${MAX_EXAMPLES:-40}" \
  --seed "${SEED:-1}" \
  --request-timeout 20 \
  --phases examples,fuzzing,stateful \
  --workers 2 || status=$?

if grep -q "Internal error\| ERROR " "$work/server.log"; then
  echo "run-fuzz: the server logged errors:" >&2
  grep " ERROR " "$work/server.log" | head -20 >&2
  status=1
fi
exit "$status"
