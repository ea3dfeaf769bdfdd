#!/usr/bin/env bash
# Brings up a single-node platform on this machine, in ./run (kept between runs):
#   the control API (SQLite), the node Emperor with unbit_containers and unbit-node-sync,
#   the stock HTTP router with the subscription validator, a DNS server on loopback standing
#   in for the public DNS (the API's domain proof asks it), a demo customer with one container.
# Prints the addresses and credentials and writes them to run/platform.env. Ctrl-C stops
# everything and leaves no process, mount, loop device or cgroup behind.
#
# Settings (environment): RUN_DIR (./run), API_PORT (8080), ROUTER_PORT (8000), DNS_PORT (8053),
# CGROUP_NAME (unbit-local). The end-to-end test uses them to run beside a developer's own.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
run=$(realpath -m "${RUN_DIR:-$root/run}")
api_port=${API_PORT:-8080}
router_port=${ROUTER_PORT:-8000}
dns_port=${DNS_PORT:-8053}
cgroup_name=${CGROUP_NAME:-unbit-local}
[[ $(id -u) -eq 0 ]] || { echo "run-platform: run as root (containers need namespaces, cgroups, mounts)"; exit 1; }

echo "== building (plugins, unbit-api, unbit-node-sync)"
make -s plugins >/dev/null
cargo build -q --release -p unbit-api -p node-sync
echo "== distro (cached after the first time)"
bash scripts/build-distro.sh "$root/distros-cache/bookworm"

mkdir -p "$run"/{specs,containers,platform/plugins,subscribe,jail,log,router,dns}
chmod 0700 "$run/specs" "$run/router"
[[ -f $run/domains.json ]] || echo '[]' >"$run/domains.json"
zone=$run/dns/zone.conf
[[ -f $zone ]] || cat >"$zone" <<'ZONE'
# The local platform's DNS zone, in dnsmasq's syntax: what a registrar's panel would hold.
# The control API asks this server for the domain proof (TXT "uwsgi:<account uuid>").
# Add a line and save; the server restarts with it within a second.
#   txt-record=mynewdomain.org,"uwsgi:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
ZONE
install -m 0644 target/plugins/*_plugin.so "$run/platform/plugins/"
install -m 0644 shortcuts/shortcuts.ini "$run/platform/"
api_bin=$root/target/release/unbit-api
sync_bin=$root/target/release/unbit-node-sync
db=$run/api.sqlite
admin() { "$api_bin" admin --db "$db" "$@"; }

# What the first run creates; kept so later runs print the same node and customer.
first_run=$run/first-run.env
if [[ ! -f $first_run && -e $db ]]; then
  echo "run-platform: $db exists but $first_run does not; move the run dir away to start afresh"
  exit 1
fi
if [[ ! -f $first_run ]]; then
  echo "== first run: creating the node, the distro, a demo customer and a container"
  # Built aside and renamed into place, so a failed first run leaves nothing half-made.
  final_db=$db
  db=$run/api.sqlite.new
  rm -f "$db" "$db"-*
  token=$(admin server add --name local --address 127.0.0.1 --memory 8192 --storage 20000)
  admin distro add --name "Debian 12 (bookworm) with uWSGI" --path bookworm >/dev/null
  password=$(head -c 12 /dev/urandom | base64 | tr -d '/+=' | head -c 16)
  admin customer add --username demo --password "$password" --email demo@example.com >/dev/null
  uid=$(admin container add --customer demo --server local --name demo --memory 512 --storage 2000)
  db=$final_db
  # SQLite runs in WAL mode: the journal files travel with the database.
  for suffix in "" -wal -shm; do
    [[ -e $run/api.sqlite.new$suffix ]] && mv "$run/api.sqlite.new$suffix" "$db$suffix"
  done
  printf 'CUSTOMER_USER=demo\nCUSTOMER_PASSWORD=%s\nCONTAINER_UID=%s\nNODE_TOKEN=%s\n' \
    "$password" "$uid" "$token" >"$first_run.new"
  chmod 0600 "$first_run.new"
  mv "$first_run.new" "$first_run"
fi
# shellcheck disable=SC1090
source "$first_run"
API=http://127.0.0.1:$api_port/api
ROUTER=http://127.0.0.1:$router_port
{
  cat "$first_run"
  echo "API=$API"
  echo "ROUTER=$ROUTER"
  echo "CONTAINERS_DIR=$run/containers"
  echo "DNS_PORT=$dns_port"
  echo "DNS_ZONE=$zone"
  echo "UNBIT_ADMIN=\"$api_bin admin --db $db\""
  # No ssh server yet: files go into the home from the host, as the container's own uid.
  echo "AS_CONTAINER=\"setpriv --reuid=$CONTAINER_UID --regid=$CONTAINER_UID --clear-groups\""
} >"$run/platform.env.new"
chmod 0600 "$run/platform.env.new"
mv "$run/platform.env.new" "$run/platform.env"

# The node's token goes to unbit-node-sync in a file: a command line is readable by anyone.
(umask 077 && printf '%s\n' "$NODE_TOKEN" >"$run/node.token")

pids=()
cleanup() {
  echo; echo "== stopping"
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Homes on quota images, mounted by the Emperor in this namespace.
  grep -o " $run/[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" || true; done
  for hierarchy in /sys/fs/cgroup/*/"$cgroup_name" /sys/fs/cgroup/"$cgroup_name"; do
    [[ -d $hierarchy ]] && find "$hierarchy" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  echo "== stopped; data kept in $run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$api_bin" serve --db "$db" --listen "127.0.0.1:$api_port" --dns-resolver "127.0.0.1:$dns_port" \
  >"$run/log/api.log" 2>&1 &
pids+=($!)
# The node: containers from the API (through unbit-node-sync) and, standing in for the public
# DNS, dnsmasq serving the zone file (restarted by uWSGI whenever the file changes).
uwsgi --plugin "$root/target/plugins/unbit_containers_plugin.so" --master --die-on-term \
  --emperor "unbit://$run/specs" --emperor-use-clone fs,pid,ipc,uts,net \
  --unbit-containers-dir "$run/containers" --unbit-distros-dir "$root/distros-cache" \
  --unbit-platform-dir "$run/platform" --unbit-subscribe-dir "$run/subscribe" \
  --unbit-jail-root "$run/jail" --unbit-cgroup-name "$cgroup_name" --unbit-quota auto \
  --attach-daemon2 "cmd=$sync_bin --api http://127.0.0.1:$api_port --token-file $run/node.token --state-dir $run/specs --domains-file $run/domains.json" \
  --attach-daemon2 "cmd=/usr/sbin/dnsmasq --keep-in-foreground --no-resolv --no-hosts --pid-file= --listen-address=127.0.0.1 --bind-interfaces --port=$dns_port --conf-file=$zone,touch=$zone" \
  --logto "$run/log/node.log" &
pids+=($!)
# The stock HTTP router; the validator owns the socket containers see as /run/subscribe/http
# and forwards verified announces to the router's private socket.
uwsgi --plugin http --plugin "$root/target/plugins/unbit_subscriptions_plugin.so" --master --die-on-term \
  --http "127.0.0.1:$router_port" --http-processes 2 --subscription-dotsplit --subscription-tolerance 30 \
  --http-subscription-server "$run/router/subscriptions.sock" \
  --unbit-subscriptions-socket "$run/subscribe/http" --unbit-subscriptions-router "$run/router/subscriptions.sock" \
  --unbit-subscriptions-domains "$run/domains.json" --unbit-subscriptions-containers-dir "$run/containers" \
  --logto "$run/log/router.log" &
pids+=($!)

for _ in $(seq 100); do curl -fs -o /dev/null "$API/news/" && break; sleep 0.1; done
cat <<INFO

uwsgi.it platform running (Ctrl-C stops it; data stays in $run)
  API          $API
  router       $ROUTER (send the domain as the Host header)
  customer     $CUSTOMER_USER / $CUSTOMER_PASSWORD (as first created)
  container    $CONTAINER_UID (home: $run/containers/$CONTAINER_UID)
  DNS          127.0.0.1 port $dns_port, zone file $zone
  supplier     $api_bin admin --db $db ...
  logs         $run/log/{api,node,router}.log, container: $run/containers/$CONTAINER_UID/logs/emperor.log
  variables    source $run/platform.env

Try: curl -u "$CUSTOMER_USER:$CUSTOMER_PASSWORD" $API/containers/$CONTAINER_UID
INFO
wait -n "${pids[@]}"
