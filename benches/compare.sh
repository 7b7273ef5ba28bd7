#!/usr/bin/env bash
# Side-by-side timing of `berth layer create` against the peer pipelines on the same trees, in the
# same run, alternating: for each tree and each of RUNS rounds,
#   berth layer create TREE -o OUT --compression gzip --threads N   vs  tar | pigz -p N -6 | sha256sum
#   berth layer create TREE -o OUT --compression zstd --threads N   vs  tar | zstd -3 -TN | sha256sum
# (the order within a pair flips every round). Prints a markdown table of medians: wall time,
# throughput (uncompressed tar bytes per second), CPU time (user + system, all processes of the
# command), output size and peak RSS (`/usr/bin/time`'s %M: for a pipeline, its largest process).
#
# berth does more than the peers: it also hashes the uncompressed stream (diff_id) and writes
# the layer to a file. OUT_DIR defaults to /dev/shm so that the file costs a page-cache copy, not
# disk time; the peers write nothing.
#
# Usage: benches/compare.sh [TREE...]   (default: the generated tree and /usr/lib/x86_64-linux-gnu)
# Environment: RUNS (5), THREADS (2), TREE_SIZE (1G), SEED (1), BENCH_DIR (/var/tmp/berth-bench,
# where the generated tree is cached), OUT_DIR (/dev/shm), CARGO_TARGET_DIR (target), NICE (unset:
# when set, every timed command, berth's and the peers' alike, runs under `nice -n $NICE`, which
# shields the comparison from unrelated load on a shared machine).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-5}
THREADS=${THREADS:-2}
TREE_SIZE=${TREE_SIZE:-1G}
SEED=${SEED:-1}
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
OUT_DIR=${OUT_DIR:-/dev/shm}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TIME=/usr/bin/time
NICE_CMD=()
if [[ -n ${NICE:-} ]]; then
  NICE_CMD=(nice -n "$NICE")
fi

log() { printf 'compare: %s\n' "$*" >&2; }

for tool in tar pigz zstd sha256sum "$TIME"; do
  command -v "$tool" >/dev/null || { log "$tool is required (scripts/setup.sh installs it)"; exit 1; }
done

log "building berth and gen-tree (release)"
cargo build --release --quiet -p berth -p berth-benches --bin berth --bin gen-tree
BERTH=$TARGET_DIR/release/berth
GEN_TREE=$TARGET_DIR/release/gen-tree

mkdir -p "$BENCH_DIR" "$OUT_DIR"
GENERATED=$BENCH_DIR/tree-$TREE_SIZE-seed$SEED
if [[ $# -gt 0 ]]; then
  TREES=("$@")
else
  TREES=("$GENERATED" /usr/lib/x86_64-linux-gnu)
fi
for tree in "${TREES[@]}"; do
  if [[ $tree == "$GENERATED" && ! -e $GENERATED.done ]]; then
    log "generating $GENERATED"
    rm -rf "$GENERATED"
    "$GEN_TREE" "$GENERATED" "$TREE_SIZE" "$SEED" >&2
    touch "$GENERATED.done"
  fi
done

WORK=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
OUT=$OUT_DIR/berth-compare-layer.$$
trap 'rm -rf "$WORK" "$OUT"' EXIT

# One timed run: `timed NAME CMD...` appends "wall cpu rss_kib" to $WORK/NAME.
timed() {
  local name=$1
  shift
  "${NICE_CMD[@]}" "$TIME" -f '%e %U %S %M' -o "$WORK/time" "$@" >"$WORK/stdout"
  awk '{ print $1, $2 + $3, $4 }' "$WORK/time" >>"$WORK/$name"
}

berth_gzip() { timed "$1" "$BERTH" layer create "$2" -o "$OUT" --compression gzip --threads "$THREADS"; }
berth_zstd() { timed "$1" "$BERTH" layer create "$2" -o "$OUT" --compression zstd --threads "$THREADS"; }
peer_pigz() {
  timed "$1" bash -c 'tar -cf - -C "$1" . | pigz -p "$2" -6 | sha256sum' _ "$2" "$THREADS"
}
peer_zstd() {
  timed "$1" bash -c 'tar -cf - -C "$1" . | zstd -q -3 -T"$2" | sha256sum' _ "$2" "$THREADS"
}

# Median of column $2 of file $1.
median() { sort -g -k"$2,$2" "$1" | awk -v c="$2" '{v[NR]=$c} END {print v[int((NR+1)/2)]}'; }

json_size() { grep -o '"size": *[0-9]*' "$1" | grep -o '[0-9]*$'; }

echo "## berth layer create vs peers"
echo
echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)," \
  "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- tools: $(pigz --version 2>&1), $(zstd --version | grep -o 'v[0-9.]*'), $(tar --version | head -1)"
echo "- settings: RUNS=$RUNS THREADS=$THREADS NICE=${NICE:-}, output to $OUT_DIR," \
  "medians of $RUNS alternating runs"
echo

rows=()
for tree in "${TREES[@]}"; do
  name=$(basename "$tree")
  log "$tree: warming the page cache and measuring sizes"
  tar_bytes=$(tar -cf - -C "$tree" . | wc -c)
  pigz_bytes=$(tar -cf - -C "$tree" . | pigz -p "$THREADS" -6 | wc -c)
  zstd_bytes=$(tar -cf - -C "$tree" . | zstd -q -3 -T"$THREADS" | wc -c)
  for ((r = 1; r <= RUNS; r++)); do
    log "$tree: round $r/$RUNS"
    if ((r % 2)); then
      berth_gzip "$name.berth-gzip" "$tree"
      peer_pigz "$name.pigz" "$tree"
      berth_zstd "$name.berth-zstd" "$tree"
      peer_zstd "$name.zstd" "$tree"
    else
      peer_pigz "$name.pigz" "$tree"
      berth_gzip "$name.berth-gzip" "$tree"
      peer_zstd "$name.zstd" "$tree"
      berth_zstd "$name.berth-zstd" "$tree"
    fi
  done
  # The layer sizes, from the JSON berth prints.
  berth_gzip "$name.size-gzip" "$tree" && cp "$WORK/stdout" "$WORK/gzip.json"
  berth_zstd "$name.size-zstd" "$tree" && cp "$WORK/stdout" "$WORK/zstd.json"
  gzip_bytes=$(json_size "$WORK/gzip.json")
  bzstd_bytes=$(json_size "$WORK/zstd.json")

  for pair in "berth-gzip pigz $gzip_bytes $pigz_bytes" "berth-zstd zstd $bzstd_bytes $zstd_bytes"; do
    read -r ours peer ours_bytes peer_bytes <<<"$pair"
    ow=$(median "$WORK/$name.$ours" 1)
    pw=$(median "$WORK/$name.$peer" 1)
    oc=$(median "$WORK/$name.$ours" 2)
    pc=$(median "$WORK/$name.$peer" 2)
    orss=$(median "$WORK/$name.$ours" 3)
    prss=$(median "$WORK/$name.$peer" 3)
    rows+=("$(awk -v tree="$name" -v mb="$tar_bytes" -v ours="$ours" -v peer="$peer" \
      -v ow="$ow" -v pw="$pw" -v oc="$oc" -v pc="$pc" -v ob="$ours_bytes" -v pb="$peer_bytes" \
      -v orss="$orss" -v prss="$prss" 'BEGIN {
        printf "| %s | %.0f | %s | %.2f | %.1f | **%.2fx** | %.2f | %.4f | %+.2f%% | %.1f |\n",
          tree, mb / 1e6, ours, ow, mb / ow / 1e6, pw / ow, oc, ob / mb, (ob / pb - 1) * 100, orss / 1024;
        printf "| %s | %.0f | %s | %.2f | %.1f | 1.00x | %.2f | %.4f | | %.1f |",
          tree, mb / 1e6, peer, pw, mb / pw / 1e6, pc, pb / mb, prss / 1024;
      }')")
  done
done

echo "| tree | tar MB | command | wall s | MB/s | speed vs peer | CPU s | output/input | size vs peer | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "- load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- berth: \`berth layer create TREE -o $OUT_DIR/FILE --compression gzip|zstd --threads $THREADS\`"
echo "- pigz: \`tar -cf - -C TREE . | pigz -p $THREADS -6 | sha256sum\`;" \
  "zstd: \`tar -cf - -C TREE . | zstd -3 -T$THREADS | sha256sum\`"
