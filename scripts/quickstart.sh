#!/usr/bin/env bash
# The main job on the embedded default: builds berth, turns a sample tree into a gzip layer,
# checks the layer with gzip -t and sha256sum, and applies it back.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# BERTH_BIN lets the test suite reuse the binary it has already built instead of a second,
# release build of the whole tree.
if [[ -n ${BERTH_BIN:-} ]]; then
  BERTH=$BERTH_BIN
else
  cargo build --release --locked --bin berth
  BERTH=$PWD/target/release/berth
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A small sample tree: text, a binary, a symlink, a hardlink, an executable, nested dirs.
tree=$work/sample
mkdir -p "$tree/etc" "$tree/usr/bin" "$tree/var/lib/app"
printf 'hello from berth\n' >"$tree/etc/motd"
cp /bin/busybox "$tree/usr/bin/busybox"
ln -s busybox "$tree/usr/bin/sh"
ln "$tree/usr/bin/busybox" "$tree/usr/bin/busybox-hardlink"
seq 1 20000 >"$tree/var/lib/app/numbers.txt"
chmod 4755 "$tree/usr/bin/busybox"

echo "== berth layer create" >&2
"$BERTH" layer create "$tree" -o "$work/layer.tar.gz" | tee "$work/layer.json"

field() { sed -n "s/.*\"$1\": *\"\\{0,1\\}\\([^\",]*\\)\"\\{0,1\\}.*/\\1/p" "$work/layer.json"; }
digest=$(field digest)
diff_id=$(field diff_id)
size=$(field size)

gzip -t "$work/layer.tar.gz"
actual_digest="sha256:$(sha256sum <"$work/layer.tar.gz" | cut -d' ' -f1)"
actual_diff_id="sha256:$(gzip -dc <"$work/layer.tar.gz" | sha256sum | cut -d' ' -f1)"
actual_size=$(stat -c %s "$work/layer.tar.gz")
[[ $actual_digest == "$digest" ]] || { echo "digest mismatch: $actual_digest != $digest" >&2; exit 1; }
[[ $actual_diff_id == "$diff_id" ]] || { echo "diff_id mismatch: $actual_diff_id != $diff_id" >&2; exit 1; }
[[ $actual_size == "$size" ]] || { echo "size mismatch: $actual_size != $size" >&2; exit 1; }
echo "gzip -t: ok; sha256sum: digest and diff_id match" >&2

echo "== berth layer apply" >&2
"$BERTH" layer apply "$work/layer.tar.gz" "$work/applied"
diff -r --no-dereference "$tree" "$work/applied"
echo "quickstart: ok" >&2
