#!/usr/bin/env bash
# The main job on the embedded default: builds berth, turns a sample tree into a gzip layer,
# checks the layer with gzip -t and sha256sum, and applies it back; then starts berth's
# registry, builds examples/hello on a busybox base made here from busybox-static, pushes it,
# and has docker pull and run it.
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
registry_pid=
cleanup() {
  if [[ -n $registry_pid ]]; then kill "$registry_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

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
echo "layer apply: the tree came back identical" >&2

# Everything berth stores goes under $work, so nothing of the user's is touched.
export BERTH_ROOT=$work/berth-root

echo "== berth registry serve" >&2
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
registry=127.0.0.1:$port
"$BERTH" registry serve --addr "$registry" --root "$work/registry" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
  curl -fsS "http://$registry/v2/" >/dev/null 2>&1 && break
  kill -0 "$registry_pid" 2>/dev/null || { cat "$work/registry.log" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "http://$registry/v2/" >/dev/null

echo "== berth build: a busybox base from busybox-static" >&2
base=$work/base
mkdir -p "$base/rootfs/bin" "$base/rootfs/etc" "$base/rootfs/root" "$base/rootfs/tmp"
chmod 1777 "$base/rootfs/tmp"
cp examples/hello/base/Dockerfile "$base/"
cp /bin/busybox "$base/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [[ $applet == busybox ]] || ln -s busybox "$base/rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$base/rootfs/etc/passwd"
printf 'root:x:0:\n' >"$base/rootfs/etc/group"
"$BERTH" build -t berth-examples/busybox:latest "$base"

echo "== berth build examples/hello" >&2
image=$registry/examples/hello:latest
"$BERTH" build -t "$image" examples/hello

echo "== berth push $image" >&2
"$BERTH" push --progress plain "$image"

echo "== docker run $image" >&2
docker pull -q "$image" >/dev/null
out=$(docker run --rm "$image" quickstart)
docker rmi -f "$image" >/dev/null
echo "$out"
[[ $out == *"hello from berth, quickstart!"* ]] || { echo "unexpected output from the image" >&2; exit 1; }
[[ $out == *"running as hello in /app"* ]] || { echo "the image's USER or WORKDIR is wrong" >&2; exit 1; }
echo "quickstart: ok" >&2
