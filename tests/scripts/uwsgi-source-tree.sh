#!/usr/bin/env bash
# Prepares a built uWSGI source tree for the source-tree tests and prints its path.
#   tests/scripts/uwsgi-source-tree.sh CACHE_DIR [VERSION] [PROFILE]
# The sources are the `uWSGI` source distribution on PyPI; the binary is built with the
# tree's own `python3 uwsgiconfig.py --build PROFILE`. Both are cached in CACHE_DIR.
set -euo pipefail
cache=$1
version=${2:-2.0.21}
profile=${3:-core}
tree="$cache/uwsgi-$version"
mkdir -p "$cache"
if [ ! -f "$tree/uwsgiconfig.py" ]; then
  pip download --quiet --no-binary :all: --no-deps "uwsgi==$version" -d "$cache" >&2
  tar -xzf "$cache/uwsgi-$version.tar.gz" -C "$cache"
fi
if [ ! -x "$tree/uwsgi" ] || [ "$(cat "$tree/.built-profile" 2>/dev/null)" != "$profile" ]; then
  (cd "$tree" && python3 uwsgiconfig.py --build "$profile" >"$cache/build-$profile.log" 2>&1) || {
    tail -20 "$cache/build-$profile.log" >&2
    exit 1
  }
  echo "$profile" >"$tree/.built-profile"
fi
echo "$tree"
