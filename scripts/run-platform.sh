#!/usr/bin/env bash
# Brings up a single-node platform on this machine, in ./run (kept between runs):
#   the control API (SQLite), and from the node's shipped configs (vassals-examples/, rendered
#   into run/etc by scripts/render-configs.sh with only the paths, ports and names of
#   scripts/local-overrides changed) the node Emperor with unbit_containers, unbit-node-sync and
#   unbit-acme (which orders nothing here: no ACME CA runs locally), the customer sshd on
#   loopback with its session broker, and the services Emperor running the HTTP router with the subscription validator; a DNS
#   server on loopback standing in for the public DNS (the API's domain proof asks it, local
#   only); an HTTP server on loopback standing in for Slack, Pushover and Pushbullet (the alarm
#   relay's base URLs point at it; each request is a line of run/log/receivers.log, local only);
#   a demo customer with one container.
# Prints the addresses and credentials and writes them to run/platform.env. Ctrl-C stops
# everything and leaves no process, mount, loop device or cgroup behind.
#
# Settings (environment): RUN_DIR (./run), API_PORT (8080), ROUTER_PORT (8000), ROUTER_HTTPS_PORT
# (8443), DNS_PORT (8053), SSH_PORT (2222), RECEIVERS_PORT (8025), CGROUP_NAME (unbit-local), RUNTIME_DIR
# (/run/unbit-local-<hash of the run dir>: the customer sshd's keys dir and the ssh broker's
# socket, outside the repository, see scripts/local-overrides; removed when the platform stops).
# The end-to-end test uses them to run beside a developer's own.
# `--render-only` renders run/etc and stops there (tests/platform_configs.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
run=$(realpath -m "${RUN_DIR:-$root/run}")
api_port=${API_PORT:-8080}
router_port=${ROUTER_PORT:-8000}
router_https_port=${ROUTER_HTTPS_PORT:-8443}
dns_port=${DNS_PORT:-8053}
ssh_port=${SSH_PORT:-2222}
receivers_port=${RECEIVERS_PORT:-8025}
cgroup_name=${CGROUP_NAME:-unbit-local}
runtime=${RUNTIME_DIR:-/run/unbit-local-$(printf '%s' "$run" | sha256sum | cut -c1-12)}
# Removed with rm -rf when the platform stops: a dir of its own, never / or a shared parent.
[[ $runtime =~ ^(/[A-Za-z0-9_.-]+){2,}$ && $runtime != */.* ]] ||
  { echo "run-platform: RUNTIME_DIR=$runtime: an absolute path of two or more plain names"; exit 2; }
render() {
  RUN_DIR=$run API_PORT=$api_port ROUTER_PORT=$router_port ROUTER_HTTPS_PORT=$router_https_port \
    DNS_PORT=$dns_port SSH_PORT=$ssh_port RECEIVERS_PORT=$receivers_port CGROUP_NAME=$cgroup_name \
    RUNTIME_DIR=$runtime \
    bash scripts/render-configs.sh
}
case "${1:-}" in
  --render-only) render; exit 0 ;;
  "") ;;
  *) echo "usage: run-platform.sh [--render-only]"; exit 2 ;;
esac
[[ $(id -u) -eq 0 ]] || { echo "run-platform: run as root (containers need namespaces, cgroups, mounts)"; exit 1; }

echo "== building (plugins, unbit-api, unbit-node-sync, unbit-acme, the ssh enter tool and broker, the alarm relay, the metrics collector, the OCI importer)"
make -s plugins >/dev/null
cargo build -q --release -p unbit-api -p node-sync -p acme -p ssh-session -p alarms -p metrics -p oci-import
echo "== distro (cached after the first time)"
bash scripts/build-distro.sh "$root/distros-cache/bookworm"

# run/router, the router's private socket dir, is made by the router itself (services/http.ini).
mkdir -p "$run"/{specs,containers,platform/plugins,subscribe,jail,log,dns,client}
chmod 0700 "$run/specs"
# The router's stats socket is bound by its http processes, which run as unbit-router.
install -d -o unbit-router -g unbit-router -m 0755 "$run/stats"
[[ -f $run/domains.json ]] || echo '[]' >"$run/domains.json"
# The customer sshd's host keys (etc/unbit/sshd_config): made once, root's alone; sshd does not
# start without them.
install -d -m 0700 "$run/ssh"
for type in ed25519 rsa; do
  key=$run/ssh/ssh_host_${type}_key
  [[ -f $key ]] || ssh-keygen -q -N '' -t "$type" -C "uwsgi.it make run" -f "$key"
done
# The sshd's keys dir (written by unbit-node-sync) and the broker's socket dir (made by the
# Emperor) go in here: root's, 0755, like every dir above it, as sshd's StrictModes wants.
install -d -o root -g root -m 0755 "$runtime"
# Every container user's login shell, at the fixed path the users' passwd lines name (shared by
# every platform on this machine: replaced by a rename, never rewritten in place).
install -d -m 0755 /usr/local/lib/unbit
install -m 0755 target/release/unbit-ssh-enter /usr/local/lib/unbit/.unbit-ssh-enter.$$
mv -f /usr/local/lib/unbit/.unbit-ssh-enter.$$ /usr/local/lib/unbit/unbit-ssh-enter
# The node's default certificate (names without a certificate of their own, clients sending no
# name): made once, self-signed, its key root's alone.
tls=$run/ssl
bash scripts/default-certificate.sh "$tls"
zone=$run/dns/zone.conf
[[ -f $zone ]] || cat >"$zone" <<'ZONE'
# The local platform's DNS zone, in dnsmasq's syntax: what a registrar's panel would hold.
# The control API asks this server for the domain proof (TXT "uwsgi:<account uuid>").
# Add a line and save; the server restarts with it within a second.
#   txt-record=mynewdomain.org,"uwsgi:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
ZONE
install -m 0644 target/plugins/*_plugin.so "$run/platform/plugins/"
# The containers' <uid>.local names: the distro links libnss_unbit.so.2 to /opt/unbit/lib.
install -d -m 0755 "$run/platform/lib"
install -m 0644 target/plugins/libnss_unbit.so.2 "$run/platform/lib/"
install -m 0644 shortcuts/shortcuts.ini "$run/platform/"
# Tools customers run inside their containers (/opt/unbit/bin): the Docker/OCI importer.
install -d -m 0755 "$run/platform/bin"
install -m 0755 target/release/unbit-oci-import "$run/platform/bin/"
api_bin=$root/target/release/unbit-api
db=$run/api.sqlite
# The database holds every container's subscription private key, as the spec files do (0600):
# root's alone. SQLite gives its -wal and -shm files the database's mode.
admin() { (umask 077 && "$api_bin" admin --db "$db" "$@"); }

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
# A run dir from before the database was made private.
for f in "$db" "$db-wal" "$db-shm"; do
  if [[ -e $f ]]; then chmod 0600 "$f"; fi
done
# shellcheck disable=SC1090
source "$first_run"
API=http://127.0.0.1:$api_port/api
ROUTER=http://127.0.0.1:$router_port
ROUTER_HTTPS=https://127.0.0.1:$router_https_port
{
  cat "$first_run"
  echo "API=$API"
  echo "ROUTER=$ROUTER"
  echo "ROUTER_HTTPS=$ROUTER_HTTPS"
  echo "ROUTER_HTTPS_PORT=$router_https_port"
  echo "DEFAULT_CERT=$tls/node.crt"
  echo "CONTAINERS_DIR=$run/containers"
  echo "DNS_PORT=$dns_port"
  echo "DNS_ZONE=$zone"
  echo "SSH_PORT=$ssh_port"
  # The local stand-in for Slack, Pushover and Pushbullet: what the alarm relay sent them.
  echo "RECEIVERS_LOG=$run/log/receivers.log"
  echo "UNBIT_ADMIN=\"$api_bin admin --db $db\""
  # The customer's side: the key the walk-through makes, the node's host key remembered in the
  # run dir (not in root's ~/.ssh), and a directory standing for the customer's laptop.
  echo "SSH_KEY=$run/customer-key"
  ssh_opts="-i $run/customer-key -o IdentitiesOnly=yes -o UserKnownHostsFile=$run/known_hosts -o StrictHostKeyChecking=accept-new"
  echo "SSH=\"ssh -p $ssh_port $ssh_opts\""
  echo "SFTP=\"sftp -P $ssh_port $ssh_opts\""
  echo "SCP=\"scp -P $ssh_port $ssh_opts\""
  echo "CLIENT_DIR=$run/client"
  # The repository, for the walk-through's steps that run its scripts.
  echo "REPO=$root"
} >"$run/platform.env.new"
chmod 0600 "$run/platform.env.new"
mv "$run/platform.env.new" "$run/platform.env"

# The node's token goes to unbit-node-sync in a file (named by run/etc/unbit/node-sync.conf):
# a command line is readable by anyone.
(umask 077 && printf '%s\n' "$NODE_TOKEN" >"$run/node.token")
render

pids=()
cleanup() {
  echo; echo "== stopping"
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Homes on quota images, mounted by the Emperor in this namespace.
  # (grep finds nothing when no container ran: not a failure, the cleanup must go on)
  { grep -o " $run/[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
  for hierarchy in /sys/fs/cgroup/*/"$cgroup_name" /sys/fs/cgroup/"$cgroup_name"; do
    [[ -d $hierarchy ]] && find "$hierarchy" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  # The keys of this platform's containers and the broker's socket: nothing left to log in with.
  rm -rf "$runtime"
  echo "== stopped; data kept in $run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$api_bin" serve --db "$db" --listen "127.0.0.1:$api_port" --dns-resolver "127.0.0.1:$dns_port" \
  >"$run/log/api.log" 2>&1 &
pids+=($!)
# As on a node, nothing but the rendered configs: the services first (the HTTP router with the
# validator; containers announce their domains as soon as they start), then the containers
# Emperor with unbit-node-sync and unbit-acme.
uwsgi --ini "$run/etc/uwsgi/services-emperor.ini" &
pids+=($!)
uwsgi --ini "$run/etc/uwsgi/emperor.ini" &
pids+=($!)
# Local only: dnsmasq serving the zone file, standing in for the public DNS.
uwsgi --ini "$run/etc/local/dns.ini" &
pids+=($!)
# Local only: Slack, Pushover and Pushbullet's stand-in, where the alarm relay's requests go.
uwsgi --ini "$run/etc/local/receivers.ini" &
pids+=($!)

for _ in $(seq 100); do curl -fs -o /dev/null "$API/news/" && break; sleep 0.1; done
cat <<INFO

uwsgi.it platform running (Ctrl-C stops it; data stays in $run)
  API          $API
  router       $ROUTER (send the domain as the Host header)
  HTTPS        $ROUTER_HTTPS (SNI: curl --resolve NAME:$router_https_port:127.0.0.1 https://NAME:$router_https_port/)
               default certificate $tls/node.crt ($(openssl x509 -in "$tls/node.crt" -noout -subject -enddate | tr '\n' ' '| sed 's/ *$//'))
  customer     $CUSTOMER_USER / $CUSTOMER_PASSWORD (as first created)
  container    $CONTAINER_UID (home: $run/containers/$CONTAINER_UID)
  DNS          127.0.0.1 port $dns_port, zone file $zone
  alarms       Slack, Pushover and Pushbullet stand in on 127.0.0.1:$receivers_port, requests in $run/log/receivers.log
  ssh          ssh -p $ssh_port $CONTAINER_UID@127.0.0.1 (with a key set on the container through the API)
  supplier     $api_bin admin --db $db ...
  logs         $run/log/{api,services,router,node,dns}.log, container: $run/containers/$CONTAINER_UID/logs/emperor.log
  configs      $run/etc (vassals-examples/ with scripts/local-overrides applied)
  variables    source $run/platform.env

Try: curl -u "$CUSTOMER_USER:$CUSTOMER_PASSWORD" $API/containers/$CONTAINER_UID
INFO
wait -n "${pids[@]}"
