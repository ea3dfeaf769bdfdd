#!/usr/bin/env bash
# Makes an OCI image (an OCI image layout, tarred: what `skopeo copy ... oci-archive:` or
# `docker save` of a recent Docker gives) from directory trees, one layer each, in order:
#
#   scripts/oci-image.sh OUT.tar DIR [DIR...]
#
# The layers are plain tars (`tar -C DIR -cf - .`), so a later DIR's files replace an earlier
# one's and `.wh.NAME` files in it are whiteouts, as in any OCI image. No registry, no Docker:
# the README's walk-through uses it to stand in for an image a customer saved on their laptop
# (the platform distro as the base layer, a layer of their own on top), and unbit-oci-import
# reads the result (docs/custom-distros.md).
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: oci-image.sh OUT.tar DIR [DIR...]" >&2; exit 2; }
out=$1
shift
for dir in "$@"; do
  [[ -d $dir ]] || { echo "oci-image: $dir is not a directory" >&2; exit 2; }
done
work=$(mktemp -d "$(dirname "$out")/.oci-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
blobs=$work/blobs/sha256
mkdir -p "$blobs"

# Moves $work/new to blobs/sha256/<its digest> and prints "<digest> <size>".
blob() {
  local digest size
  digest=$(sha256sum "$work/new" | cut -d' ' -f1)
  size=$(stat -c %s "$work/new")
  mv "$work/new" "$blobs/$digest"
  echo "$digest $size"
}

layers=()
diff_ids=()
for dir in "$@"; do
  tar -C "$dir" -cf "$work/new" .
  read -r digest size < <(blob)
  layers+=("{\"mediaType\": \"application/vnd.oci.image.layer.v1.tar\", \"digest\": \"sha256:$digest\", \"size\": $size}")
  # Uncompressed layers: the diff id is the layer's own digest.
  diff_ids+=("\"sha256:$digest\"")
done
join() { local IFS=,; echo "$*"; }

printf '{"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [%s]}}' \
  "$(join "${diff_ids[@]}")" >"$work/new"
read -r config_digest config_size < <(blob)
printf '{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:%s", "size": %s}, "layers": [%s]}' \
  "$config_digest" "$config_size" "$(join "${layers[@]}")" >"$work/new"
read -r manifest_digest manifest_size < <(blob)
printf '{"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:%s", "size": %s}]}' \
  "$manifest_digest" "$manifest_size" >"$work/index.json"
echo '{"imageLayoutVersion": "1.0.0"}' >"$work/oci-layout"

tar -C "$work" -cf "$work/image.tar" oci-layout index.json blobs
mv "$work/image.tar" "$out"
echo "oci-image: $out: $# layer(s), $(stat -c %s "$out") bytes"
