#!/usr/bin/env bash
# Installs every system package the build, the tests and the local platform need on a fresh
# Debian 12 machine. Idempotent: a second run only checks.
set -euo pipefail

PACKAGES=(
  # stock uWSGI 2.0.21 and the language plugins customers use
  uwsgi-core uwsgi-dev uwsgi-plugin-python3 uwsgi-plugin-psgi uwsgi-plugin-rack-ruby3.1
  # the plugin sources of the installed uWSGI: uwsgi-sys reads the HTTP router's structures
  # from them (plugins/corerouter/cr.h, plugins/http/common.h)
  uwsgi-src
  # bindgen reads uwsgi.h through libclang; the source-tree build needs the C toolchain
  libclang-dev clang build-essential pkg-config libssl-dev libpcre3-dev zlib1g-dev
  libcap-dev uuid-dev libyaml-dev libyajl-dev libxml2-dev python3-dev
  # containers: distros, quota backends, loop devices, network
  debootstrap btrfs-progs e2fsprogs util-linux iproute2 procps psmisc crun busybox-static
  # the node's nftables table for container networking (nft, driven by the node Emperor)
  nftables
  # tests and benchmarks
  curl openssl sqlite3 hyperfine wrk
  # the quickstart's `host -t TXT` against the local platform's DNS
  bind9-host
  # unbit-api tests: real PostgreSQL, slapd (LDAP bind backend) and a DNS server with TXT
  # records (dnsmasq-base: the binary without a system service on port 53)
  postgresql slapd ldap-utils dnsmasq-base
  # unbit-acme tests: Let's Encrypt's test CA, run on loopback by the tests (never a public CA)
  pebble
  # customers' ssh into their containers: Debian's sshd, run by the node Emperor as a dedicated
  # customer sshd (vassals-examples/sshd_config), never as the system's ssh service; container
  # users come from root-owned extrausers files (/var/lib/extrausers, written by unbit-node-sync)
  openssh-server libnss-extrausers
  # alarms tests: a real XMPP server on loopback (started by the tests with their own config and
  # accounts; the package's system service is never started, see policy-rc.d below)
  prosody
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Servers the tests start themselves (slapd, postgresql, prosody) must not be started system-wide by
  # their packages (slapd would listen on 0.0.0.0:389): policy-rc.d forbids service starts.
  policy=/usr/sbin/policy-rc.d
  own_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && own_policy=1
  fi
  # openssh-server's postinst would start the system sshd on 0.0.0.0:22 too: any sshd the
  # install starts despite the policy is found by comparing with the ones running before.
  sshd_before=$(pgrep -x sshd | sort || true)
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || { [ -n "$own_policy" ] && rm -f "$policy"; exit 1; }
  [ -n "$own_policy" ] && rm -f "$policy"
  started=$(comm -13 <(echo "$sshd_before") <(pgrep -x sshd | sort || true) | grep . || true)
  if [[ -n $started ]]; then
    echo "install-deps: the openssh-server install started sshd ($started): stopping it" >&2
    # shellcheck disable=SC2086
    kill $started
  fi
fi
# Container users (uid = container uid, shell = the ssh enter tool) are looked up in
# /var/lib/extrausers after the system's own files: added once, idempotently.
if ! grep -Eq '^passwd:.*\bextrausers\b' /etc/nsswitch.conf ||
  ! grep -Eq '^group:.*\bextrausers\b' /etc/nsswitch.conf ||
  ! grep -Eq '^shadow:.*\bextrausers\b' /etc/nsswitch.conf; then
  sed -E -i '/^(passwd|group|shadow):/{/\bextrausers\b/!s/$/ extrausers/}' /etc/nsswitch.conf
  echo "install-deps: extrausers added to the passwd, group and shadow lines of /etc/nsswitch.conf"
fi
install -d -m 0755 /var/lib/extrausers
# The HTTP router's http processes run as a user of their own (vassals-examples/services/http.ini).
getent passwd unbit-router >/dev/null ||
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin unbit-router
# promtool, with which tests/metrics.rs checks the collector's Prometheus exposition: only that
# binary, taken out of Debian's prometheus package (a 19 MB download, 96 MB installed with the
# Prometheus server and its service, which the platform does not need)
if ! command -v promtool >/dev/null; then
  tmp=$(mktemp -d)
  ( cd "$tmp" && { apt-get download -qq prometheus 2>/dev/null || { apt-get update -qq && apt-get download -qq prometheus; }; } &&
    dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/promtool ) &&
    install -m 0755 "$tmp/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$tmp"
  command -v promtool >/dev/null || { echo "install-deps: could not install promtool" >&2; exit 1; }
fi
# unbit-api OpenAPI fuzz test (crates/unbit-api/tests/run-fuzz.sh)
python3 -c "import schemathesis" 2>/dev/null || pip install -q schemathesis==4.32.5
echo "install-deps: all ${#PACKAGES[@]} packages present"
