#!/usr/bin/env bash
# Renders the node's shipped configs for the local platform into $RUN_DIR/etc, the way an
# operator installs them on a node: every vassals-examples/**/*.ini (a node's /etc/uwsgi) goes
# to $RUN_DIR/etc/uwsgi/, and vassals-examples/sshd_config (a node's /etc/unbit/sshd_config) to
# $RUN_DIR/etc/unbit/, with the values scripts/local-overrides declares replaced (paths, ports,
# names) and nothing else; the local-only files that table declares are written beside them.
# The new tree is built aside and renamed into place: never a half-rendered config.
#
# run-platform.sh runs it (`run-platform.sh --render-only` runs nothing else); its settings come
# from the environment: RUN_DIR, API_PORT, ROUTER_PORT, ROUTER_HTTPS_PORT, DNS_PORT, SSH_PORT,
# RECEIVERS_PORT, CGROUP_NAME, RUNTIME_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
table=scripts/local-overrides
fail() { echo "render-configs: $*" >&2; exit 1; }

for var in RUN_DIR API_PORT ROUTER_PORT ROUTER_HTTPS_PORT DNS_PORT SSH_PORT RECEIVERS_PORT CGROUP_NAME RUNTIME_DIR; do
  [[ -n ${!var:-} ]] || fail "$var is not set (scripts/run-platform.sh sets it)"
done
run=$RUN_DIR
# uWSGI splits option values on blanks and commas and expands %, $ and @ in them.
for dir in "$run" "$root" "$RUNTIME_DIR"; do
  [[ $dir == /* && $dir != *[[:space:],%\$@\;\#\"\'\\]* ]] ||
    fail "$dir: must be an absolute path without blanks, commas, quotes or % \$ @ ; # \\"
done
for var in API_PORT ROUTER_PORT ROUTER_HTTPS_PORT DNS_PORT SSH_PORT RECEIVERS_PORT; do
  [[ ${!var} =~ ^[0-9]{1,5}$ ]] || fail "$var=${!var} is not a port"
done
[[ $CGROUP_NAME =~ ^[A-Za-z0-9_.-]+$ ]] || fail "CGROUP_NAME=$CGROUP_NAME: letters, digits, _ . - only"

# The table's LOCAL column with its variables filled in.
expand() {
  local v=$1
  v=${v//'$RUNTIME'/$RUNTIME_DIR}
  v=${v//'$RUN'/$run}
  v=${v//'$ROOT'/$root}
  v=${v//'$ROUTER_HTTPS_PORT'/$ROUTER_HTTPS_PORT}
  v=${v//'$ROUTER_PORT'/$ROUTER_PORT}
  v=${v//'$API_PORT'/$API_PORT}
  v=${v//'$DNS_PORT'/$DNS_PORT}
  v=${v//'$SSH_PORT'/$SSH_PORT}
  v=${v//'$RECEIVERS_PORT'/$RECEIVERS_PORT}
  v=${v//'$CGROUP_NAME'/$CGROUP_NAME}
  [[ $v != *'$'* ]] || return 1
  printf '%s' "$v"
}

map=$(mktemp)
trap 'rm -f "$map"' EXIT
declare -A local_files=()
n=0
# (a last line without its newline is read too, not dropped)
while read -r first second third rest || [[ -n $first ]]; do
  n=$((n + 1))
  [[ -z $first || $first == \#* ]] && continue
  if [[ $first == local ]]; then
    [[ -n $third ]] || fail "$table line $n: expected: local PATH STANDS-IN-FOR WHY"
    local_files[$second]=$third
    continue
  fi
  [[ -n $third && -z $rest ]] || fail "$table line $n: expected: OPTION PRODUCTION LOCAL"
  value=$(expand "$third") || fail "$table line $n: unknown variable in $third"
  printf '%s\t%s\t%s\n' "$first" "$second" "$value" >>"$map"
done <"$table"

# Maps the value of each option line (`option = value` in an ini file, `Keyword value` in
# sshd_config: the second argument says which); comments, sections and blank lines are copied
# as they are. One pass, longest production value first, so a local value is never mapped again.
# shellcheck disable=SC2016
render='
use strict; use warnings;
my %maps;
open(my $fh, "<", $ARGV[0]) or die "$ARGV[0]: $!";
while (<$fh>) { chomp; my ($opt, $prod, $local) = split /\t/; $maps{$opt}{$prod} = $local; }
close $fh;
my $name = "[A-Za-z0-9_.-]";
my $option_line = $ARGV[1] eq "sshd"
  ? qr/^(\s*([A-Za-z][A-Za-z0-9]*)\s+)(.*?)(\s*)$/s
  : qr/^(\s*([A-Za-z0-9][A-Za-z0-9_.-]*)\s*=\s*)(.*?)(\s*)$/s;
while (my $line = <STDIN>) {
  if ($line !~ /^\s*[;#\[]/ && $line =~ $option_line) {
    my ($head, $opt, $value, $tail) = ($1, $2, $3, $4);
    my %m = (%{ $maps{"*"} || {} }, %{ $maps{$opt} || {} });
    if (%m) {
      my $alt = join "|", map { quotemeta } sort { length($b) <=> length($a) } keys %m;
      $value =~ s/(?<!$name)($alt)(?!$name)/$m{$1}/g;
    }
    $line = "$head$value$tail";
  }
  print $line;
}
'

new=$run/etc.new
rm -rf "$new"
mkdir -p "$new/uwsgi"
while IFS= read -r -d '' shipped; do
  rel=${shipped#vassals-examples/}
  mkdir -p "$new/uwsgi/$(dirname "$rel")"
  perl -e "$render" "$map" ini <"$shipped" >"$new/uwsgi/$rel"
done < <(find vassals-examples -type f -name '*.ini' -print0 | sort -z)
mkdir -p "$new/unbit"
perl -e "$render" "$map" sshd <vassals-examples/sshd_config >"$new/unbit/sshd_config"

write_local() {
  case $1 in
    unbit/node-sync.conf)
      cat <<CONF
# Local only (make run), in place of vassals-examples/node-sync.conf: the node's connection to
# the local control API, plain http on loopback with the node's dev token (kept out of every
# command line). A node has https and its mTLS certificate here.
api = http://127.0.0.1:$API_PORT
token-file = $run/node.token
CONF
      ;;
    unbit/acme.conf)
      cat <<CONF
# Local only (make run), in place of vassals-examples/acme.conf: no ACME CA runs under make
# run, so unbit-acme orders nothing; it still answers challenges and writes its index.
directory = off
CONF
      ;;
    local/dns.ini)
      local zone=$run/dns/zone.conf
      cat <<INI
; Local only (make run), not a node's service: dnsmasq on loopback standing in for the public
; DNS, which the control API asks for the domain proof (TXT "uwsgi:<account uuid>"). uWSGI
; restarts it within a second whenever the zone file changes.
[uwsgi]
master = true
die-on-term = true
attach-daemon2 = cmd=/usr/sbin/dnsmasq --keep-in-foreground --no-resolv --no-hosts --pid-file= --listen-address=127.0.0.1 --bind-interfaces --port=$DNS_PORT --conf-file=$zone,touch=$zone
logto = $run/log/dns.log
INI
      ;;
    local/receivers.ini)
      cat <<INI
; Local only (make run), not a node's service: one HTTP server on loopback standing in for
; Slack, Pushover and Pushbullet (scripts/local-receivers.py), where the alarm relay's base URLs
; point under make run (scripts/local-overrides). Each request it gets is a line of
; $run/log/receivers.log.
[uwsgi]
master = true
die-on-term = true
attach-daemon2 = cmd=exec python3 $root/scripts/local-receivers.py $RECEIVERS_PORT $run/log/receivers.log
logto = $run/log/receivers-server.log
INI
      ;;
    *) fail "$table declares local $1, which this script does not know how to write" ;;
  esac
}
for path in "${!local_files[@]}"; do
  mkdir -p "$(dirname "$new/$path")"
  (umask 077 && write_local "$path" >"$new/$path")
done

rm -rf "$run/etc.old"
if [[ -e $run/etc ]]; then mv "$run/etc" "$run/etc.old"; fi
mv "$new" "$run/etc"
rm -rf "$run/etc.old"
