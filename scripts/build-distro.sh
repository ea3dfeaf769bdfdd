#!/usr/bin/env bash
# Builds a container root filesystem ("distro") for the jail in crates/jail.
#
#   scripts/build-distro.sh <dest-dir> [--minimal]
#
# full (default): Debian 12 (bookworm) minbase from the mirror apt already uses, plus stock
#   uWSGI, the language plugins customers use and a customer's shell (python3 with venv and pip,
#   perl, ruby with gem and bundler, git, vi, curl, less, procps, locales, sftp-server).
# --minimal: a busybox-static rootfs (a few MB, well under a second), used by the tests.
#
# Both modes create the mountpoints the jail needs and refuses to invent at run time, because
# the distro is mounted read-only: /proc /dev /tmp /run /var/{tmp,log,spool} /usr/local
# /containers /opt/unbit, and /etc/{hosts,hostname,resolv.conf} as regular files (the jail
# bind-mounts the container's own copies over them).
#
# Cached: <dest>/.unbit-distro-stamp holds the mode and this script's hash (so a changed package
# list rebuilds); a second run with the same script and mode does nothing. The new tree is built beside <dest> and renamed into
# place, so a half-built distro is never visible. A replaced distro is moved aside, not
# deleted: running containers may still have it mounted.
#
# Runs as root on the trusted host. debootstrap executes the new tree's binaries in a chroot
# while it installs packages: acceptable for the platform's own distros built from Debian's
# signed archive, never to be done with a customer image.
set -euo pipefail

usage() { echo "usage: $0 <dest-dir> [--minimal]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
dest=${1%/}
mode=full
if [[ $# -eq 2 ]]; then
  [[ $2 == --minimal ]] || usage
  mode=minimal
fi
[[ -n $dest && $dest != / ]] || usage
[[ $(id -u) -eq 0 ]] || { echo "build-distro: must run as root" >&2; exit 1; }

SUITE=bookworm
# ruby-rack: the customer quickstart's myapp.ru (`run MyApp.new`) needs the rack gem.
PACKAGES=(uwsgi-core uwsgi-plugin-python3 uwsgi-plugin-psgi uwsgi-plugin-rack-ruby3.1 ruby-rack)
# The customer's shell: what users of a Python/Perl/Ruby host expect to find. python3-venv
# brings ensurepip's wheels, so `python3 -m venv` gives each venv its own pip; ruby brings
# gem, ruby-bundler `bundle`; vim-tiny is `vi`; openssh-sftp-server is what an SFTP login runs.
# ca-certificates: curl, pip, gem and git over HTTPS verify servers against it; openssl: the
# quickstart's keys, certificates and client CA are made from the ssh shell.
PACKAGES+=(python3 python3-venv python3-pip perl ruby ruby-bundler git vim-tiny curl ca-certificates
  less procps locales openssh-sftp-server openssl)

script_hash=$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)
stamp_value="$mode $script_hash"
stamp_file=.unbit-distro-stamp
# Test suites call this from parallel threads, and a changed script makes every cached tree
# stale at once: one build at a time per <dest>, the others wait and then find it current.
mkdir -p "$(dirname "$dest")"
exec {lock}>"$dest.lock"
flock "$lock"
if [[ -f $dest/$stamp_file && $(<"$dest/$stamp_file") == "$stamp_value" ]]; then
  echo "build-distro: $dest is up to date ($mode)"
  exit 0
fi

need() { command -v "$1" >/dev/null || { echo "build-distro: '$1' not found (scripts/install-deps.sh installs it)" >&2; exit 1; }; }

work=$(mktemp -d "$dest.build.XXXXXX")
cleanup() {
  # debootstrap mounts proc/sys inside the target while it works; never let rm walk into a
  # mounted filesystem. Unmount whatever is left below $work (deepest first), then remove.
  local m
  for m in $(awk -v w="$work" '$5 == w || index($5, w "/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

start=$(date +%s%N)

# The mirror apt is configured with (deb822 "URIs:" or one-line "deb" sources), so the build
# goes wherever the host's own package installs go.
debian_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
    [[ -f $f ]] || continue
    uri=$(awk '
      /^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /debian\/?$/ && $i !~ /security/) { print $i; exit } }
      /^deb /  { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/ && $i ~ /debian\/?$/ && $i !~ /security/) { print $i; exit } }
    ' "$f")
    [[ -n $uri ]] && { echo "$uri"; return; }
  done
  echo http://deb.debian.org/debian
}

case $mode in
  minimal)
    need busybox
    busybox=$(command -v busybox)
    # The rootfs has no libc: busybox must be the static build (ldd fails on static binaries).
    if ldd "$busybox" >/dev/null 2>&1; then
      echo "build-distro: $busybox is dynamically linked (install busybox-static)" >&2; exit 1
    fi
    mkdir -p "$work/bin"
    cp "$busybox" "$work/bin/busybox"
    for applet in $("$work/bin/busybox" --list); do
      [[ $applet == busybox ]] || ln -s busybox "$work/bin/$applet"
    done
    ln -s bin "$work/sbin"
    mkdir -p "$work/usr"
    ln -s ../bin "$work/usr/bin"
    ln -s ../bin "$work/usr/sbin"
    mkdir -p "$work/etc" "$work/root" "$work/home"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$work/etc/passwd"
    printf 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n' >"$work/etc/group"
    ;;
  full)
    need debootstrap
    mirror=$(debian_mirror)
    echo "build-distro: debootstrap $SUITE from $mirror with ${PACKAGES[*]}"
    includes=$(IFS=,; echo "${PACKAGES[*]}")
    debootstrap --variant=minbase --include="$includes" "$SUITE" "$work" "$mirror" \
      >"$work.log" 2>&1 || { echo "build-distro: debootstrap failed, last lines of $work.log:" >&2; tail -n 30 "$work.log" >&2; exit 1; }
    rm -f "$work.log"
    # Package caches are dead weight in a read-only image.
    rm -rf "$work"/var/cache/apt/archives/*.deb "$work"/var/lib/apt/lists/*_dists_* "$work"/var/log/*.log
    # The customer quickstart says `plugin = 0:python`: Debian 12 only ships python3. uWSGI
    # follows one link and looks up the symbol its target's name implies, so link to the real
    # file (python311_plugin.so), not to python3_plugin.so (itself a link via alternatives).
    plugins=$work/usr/lib/uwsgi/plugins
    real=$(basename "$(readlink "$work/etc/alternatives/uwsgi-plugin-python3")")
    [[ -f $plugins/$real ]] || { echo "build-distro: no python3 uWSGI plugin in the distro" >&2; exit 1; }
    ln -sfn "$real" "$plugins/python_plugin.so"
    # C.UTF-8 is built into Debian's libc; en_US.UTF-8 is the one customers' tools ask for.
    echo 'en_US.UTF-8 UTF-8' >"$work/etc/locale.gen"
    chroot "$work" locale-gen >/dev/null || { echo "build-distro: locale-gen failed in $work" >&2; exit 1; }
    # Names of containers (`getent hosts 30002.local`): glibc's NSS loads libnss_unbit.so.2 from
    # the libc's directory. The module is not copied in but linked to the platform dir, mounted
    # read-only at /opt/unbit in every container: a new module reaches every container at its
    # next start without rebuilding (or re-stamping) any distro, and a custom distro gets names
    # with the same link and nsswitch line (docs/networking.md, "Names"). A platform dir
    # without the module leaves a dangling link, which glibc skips as an unavailable source.
    libc=$(find "$work/usr/lib" -maxdepth 2 -name libc.so.6 -print -quit)
    [[ -n $libc ]] || { echo "build-distro: no libc.so.6 under $work/usr/lib" >&2; exit 1; }
    ln -sfn /opt/unbit/lib/libnss_unbit.so.2 "$(dirname "$libc")/libnss_unbit.so.2"
    # unbit right after files (a customer's own ~/etc/hosts wins), so before dns (no query
    # leaves the container for a .local name) and before anything that claims .local (mdns).
    sed -E -i '/^hosts:/{/[[:space:]]unbit([[:space:]]|$)/!{s/[[:space:]]files([[:space:]]|$)/ files unbit\1/;t;s/[[:space:]]dns([[:space:]]|$)/ unbit dns\1/;t;s/$/ unbit/}}' \
      "$work/etc/nsswitch.conf"
    grep -Eq '^hosts:.*[[:space:]]unbit([[:space:]]|$)' "$work/etc/nsswitch.conf" ||
      { echo "build-distro: no hosts line in $work/etc/nsswitch.conf to add unbit to" >&2; exit 1; }
    ;;
esac

# Mountpoints the jail needs (the distro is read-only at run time).
mkdir -p "$work"/{proc,dev,sys,tmp,run,usr/local,var/tmp,var/log,var/spool,containers,opt/unbit}
chmod 0755 "$work"/{proc,dev,sys,tmp,run,containers,opt,opt/unbit}
# /etc/hosts, hostname, resolv.conf are bind targets: regular files, never symlinks
# (the jail refuses to mount through a symlink).
for f in hosts hostname resolv.conf; do
  if [[ -L $work/etc/$f || ! -f $work/etc/$f ]]; then
    rm -f "$work/etc/$f"
    : >"$work/etc/$f"
  fi
  chmod 0644 "$work/etc/$f"
done
echo "$stamp_value" >"$work/$stamp_file"
chmod 0755 "$work"

if [[ -e $dest ]]; then
  old="$dest.replaced.$(date +%Y%m%d%H%M%S)"
  mv "$dest" "$old"
  echo "build-distro: previous tree moved to $old (delete it once no container uses it)"
fi
mv "$work" "$dest"
trap - EXIT
ms=$((($(date +%s%N) - start) / 1000000))
printf 'build-distro: built %s (%s) in %d.%03d s, %s\n' "$dest" "$mode" $((ms / 1000)) $((ms % 1000)) "$(du -sh "$dest" | cut -f1)"
