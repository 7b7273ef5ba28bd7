#!/usr/bin/env bash
# Writes a reproducible OCI image layout for the registry benchmarks.
#
# Usage: benches/registry/gen-image.sh DIR SIZE LAYERS [SEED] [TAG]
#   DIR     the layout to write; must not exist (it is built in DIR.tmp, then renamed)
#   SIZE    total layer payload, e.g. 1G, 64M, 10K (binary units)
#   LAYERS  number of layers; each holds one file of SIZE/LAYERS bytes
#   SEED    (1) changes every byte of the payload
#   TAG     (bench) the org.opencontainers.image.ref.name of the image
#
# Each layer is a gzip tar holding one file of incompressible bytes: the AES-128-CTR keystream
# of a key derived from SEED and the layer number, so the blobs are about SIZE bytes in total and
# compression cannot shrink them. Tar headers are normalised (mtime 0, uid/gid 0) and gzip
# writes no name or time, so the same arguments give the same digests.
#
# `gen-image.sh stream BYTES SEED NAME` writes BYTES bytes of the keystream for NAME to stdout
# (used to feed large uploads without storing them).
set -euo pipefail

die() {
  printf 'gen-image: %s\n' "$*" >&2
  exit 1
}

# key_for SEED NAME: a 128-bit hex key.
key_for() { printf 'berth-bench seed=%s %s' "$1" "$2" | sha256sum | cut -c1-32; }

# stream BYTES SEED NAME: BYTES bytes of keystream on stdout. CTR output is exactly as long as
# its input, so the length is set by the zeros fed in and no process is cut off by SIGPIPE.
stream() {
  head -c "$1" /dev/zero |
    openssl enc -aes-128-ctr -K "$(key_for "$2" "$3")" -iv 00000000000000000000000000000000
}

if [[ ${1:-} == stream ]]; then
  [[ $# -eq 4 ]] || die "usage: gen-image.sh stream BYTES SEED NAME"
  stream "$2" "$3" "$4"
  exit 0
fi

[[ $# -ge 3 && $# -le 5 ]] || die "usage: gen-image.sh DIR SIZE LAYERS [SEED] [TAG]"
DIR=$1
SIZE=$(numfmt --from=iec "$2") || die "bad size $2"
LAYERS=$3
SEED=${4:-1}
TAG=${5:-bench}
[[ $LAYERS =~ ^[1-9][0-9]*$ ]] || die "bad layer count $LAYERS"
[[ -e $DIR ]] && die "$DIR exists"
for tool in openssl tar pigz sha256sum numfmt; do
  command -v "$tool" >/dev/null || die "$tool is required"
done

TMP=$DIR.tmp
rm -rf "$TMP"
mkdir -p "$TMP/blobs/sha256" "$TMP/payload"
BLOBS=$TMP/blobs/sha256

# put FILE: moves FILE into the blob directory; prints "DIGEST SIZE".
put() {
  local hex size
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$BLOBS/$hex"
  printf 'sha256:%s %s\n' "$hex" "$size"
}

PER_LAYER=$((SIZE / LAYERS))
diff_ids=()
layers=()
for ((i = 1; i <= LAYERS; i++)); do
  name=$(printf 'layer-%03d' "$i")
  mkdir -p "$TMP/payload/$name"
  stream "$PER_LAYER" "$SEED" "$name" >"$TMP/payload/$name/data"
  touch -d @0 "$TMP/payload/$name/data" "$TMP/payload/$name"
  tar -C "$TMP/payload" --format=gnu --sort=name --mtime=@0 --owner=0 --group=0 \
    --numeric-owner -cf "$TMP/layer.tar" "$name"
  rm -rf "${TMP:?}/payload/$name"
  diff_ids+=("sha256:$(sha256sum "$TMP/layer.tar" | cut -d' ' -f1)")
  pigz -n -1 -c "$TMP/layer.tar" >"$TMP/layer.tar.gz"
  rm -f "$TMP/layer.tar"
  read -r digest size < <(put "$TMP/layer.tar.gz")
  layers+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$digest\",\"size\":$size}")
  printf 'gen-image: layer %d/%d %s %s bytes\n' "$i" "$LAYERS" "$digest" "$size" >&2
done
rmdir "$TMP/payload"

join() {
  local IFS=,
  printf '%s' "$*"
}
quoted=()
for d in "${diff_ids[@]}"; do quoted+=("\"$d\""); done

printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Cmd":["/bin/true"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
  "$(join "${quoted[@]}")" >"$TMP/config.json"
read -r config_digest config_size < <(put "$TMP/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[%s]}' \
  "$config_digest" "$config_size" "$(join "${layers[@]}")" >"$TMP/manifest.json"
read -r manifest_digest manifest_size < <(put "$TMP/manifest.json")

printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}\n' \
  "$manifest_digest" "$manifest_size" "$TAG" >"$TMP/index.json"
printf '{"imageLayoutVersion":"1.0.0"}\n' >"$TMP/oci-layout"

mv "$TMP" "$DIR"
printf 'gen-image: %s: manifest %s\n' "$DIR" "$manifest_digest" >&2
