#!/usr/bin/env bash
# A small Legion on this machine (`sudo make legion-demo`, docs/clustering.md "Try it"): three
# nodes in their own network namespaces, a cluster-domain served by containers on two of them,
# requests balanced through the Lord's floating address, the Lord's death and the failover.
# The nodes are tests/cluster_kit's (the clustering test's); examples/legion_demo.rs runs the
# steps and says what it does. Everything is removed at the end, on a failure or on Ctrl-C.
#
# Arguments go to the demo: --keep stays up after the last step until Ctrl-C.
# Environment: LEGION_DEMO_UID (31450, the containers' first uid), LEGION_DEMO_REQUESTS (10),
# LEGION_DEMO_API (target/release/unbit-api; step 4 is skipped without it).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "legion-demo: run as root (network namespaces, containers, cgroups)"; exit 1; }
echo "== building (plugins, unbit-api, unbit-node-sync, the demo)"
make -s plugins >/dev/null
cargo build -q --release -p unbit-api -p node-sync
cargo build -q --example legion_demo
echo "== distro (cached after the first time)"
bash scripts/build-distro.sh "$PWD/distros-cache/bookworm"
exec "${CARGO_TARGET_DIR:-target}/debug/examples/legion_demo" "$@"
