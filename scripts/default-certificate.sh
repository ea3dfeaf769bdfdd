#!/usr/bin/env bash
# Makes the node's default certificate for `make run` (and the tests that run the shipped router
# config), once: DIR/node.crt and DIR/node.key, self-signed, P-256. It is what the router serves
# for names without a certificate of their own and to clients that send no name. The key is
# root's alone (the router's master reads it before its http processes drop root).
#   scripts/default-certificate.sh DIR
set -euo pipefail
dir=${1:?usage: default-certificate.sh DIR}
if [[ ! -f $dir/node.crt || ! -f $dir/node.key ]]; then
  install -d -m 0700 "$dir"
  # openssl chats on stderr when it works: keep it for when it does not.
  if ! out=$(umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -subj "/CN=uwsgi.it local node" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$dir/node.key.new" -out "$dir/node.crt.new" 2>&1); then
    echo "default-certificate: openssl could not make $dir/node.crt:" >&2
    echo "$out" >&2
    rm -f "$dir/node.key.new" "$dir/node.crt.new"
    exit 1
  fi
  chmod 0644 "$dir/node.crt.new"
  mv "$dir/node.key.new" "$dir/node.key"
  mv "$dir/node.crt.new" "$dir/node.crt"
fi
# The certificate is public (clients may trust it with --cacert); the key is not.
chmod 0711 "$dir"
