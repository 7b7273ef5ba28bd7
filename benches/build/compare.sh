#!/usr/bin/env bash
# Side-by-side benchmark of `berth build` against `docker build` (docker 20.10's daemon with
# BuildKit, DOCKER_BUILDKIT=1), on the same base image, the same contexts and the same machine.
# Each build ends with the image in an archive on disk, since that is what a CI job hands on:
#   berth:  berth build -t bench/CASE --output type=oci,dest=OUT.tar CONTEXT
#   docker: docker build --no-cache -t bench/CASE CONTEXT && docker save -o OUT.tar bench/CASE
# (docker 20.10's built-in BuildKit has no `oci` exporter; `docker save` is its way to an
# archive, written uncompressed, while berth's archive holds gzip layers.)
# Both start from the same busybox base, made here from busybox-static with `berth build`
# and handed to docker with `berth save --format docker | docker load`. berth's store is
# fresh for every build, but for the base, which is loaded once per run, as docker's daemon
# keeps it too. The order within each pair flips from one run to the next; figures are
# medians over the runs, ratios medians of the per-run ratios docker/berth (above 1: berth
# is faster).
#
# Cases:
#   copy-1g   FROM base; COPY data/ /data/ of a context of CONTEXT_SIZE (default 1G): FILES
#             incompressible files of equal size plus 2,000 small text files.
#   run-10    FROM base; 10 RUN steps, each writing 200 files (text and a 4 MiB binary).
#
# Usage: benches/build/compare.sh [--runs N] [--cases "copy-1g run-10"] [--context-size SIZE]
# The same settings come from the environment: RUNS (5), CASES, CONTEXT_SIZE (1G), FILES (64),
# BENCH_DIR (/var/tmp/berth-bench-build: contexts, stores, archives), BERTH_BIN (a berth binary
# to use instead of building target/release/berth), CARGO_TARGET_DIR (target).
# The markdown table goes to stdout and to BENCH_DIR/last.md; progress goes to stderr.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/busybox.sh
source "$HERE/../lib/busybox.sh"
ROOT=$(cd "$HERE/../.." && pwd)

RUNS=${RUNS:-5}
CASES=${CASES:-copy-1g run-10}
CONTEXT_SIZE=${CONTEXT_SIZE:-1G}
FILES=${FILES:-64}
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench-build}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DOCKER=/usr/bin/docker
BASE=berth-bench/busybox:latest

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
log() { printf 'build-bench %(%H:%M:%S)T [load %s] %s\n' -1 "$(cut -d' ' -f1 /proc/loadavg)" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

while [[ $# -gt 0 ]]; do
  if [[ $1 == -h || $1 == --help ]]; then
    usage
    exit 0
  fi
  [[ $# -ge 2 ]] || die "$1 needs a value"
  case $1 in
    --runs) RUNS=$2 ;;
    --cases) CASES=$2 ;;
    --context-size) CONTEXT_SIZE=$2 ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
  shift 2
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "bad run count $RUNS"
for case in $CASES; do
  [[ $case =~ ^(copy-1g|run-10)$ ]] || die "unknown case $case"
done
for tool in "$DOCKER" busybox numfmt awk openssl; do
  command -v "$tool" >/dev/null || die "$tool is required (bash scripts/setup.sh installs it)"
done
"$DOCKER" info >/dev/null 2>&1 || die "the docker daemon does not answer (bash scripts/setup.sh starts it)"

if [[ -n ${BERTH_BIN:-} ]]; then
  BERTH=$BERTH_BIN
else
  log "building berth (release)"
  (cd "$ROOT" && cargo build --release --quiet -p berth --bin berth)
  BERTH=$TARGET_DIR/release/berth
fi
[[ -x $BERTH ]] || die "$BERTH was not built"

mkdir -p "$BENCH_DIR"
WORK=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# The base: busybox-static and its applet links, /etc/passwd and /etc/group.
make_base() {
  local ctx=$WORK/base
  busybox_context "$ctx"
  BERTH_ROOT=$WORK/base-root "$BERTH" build -t "$BASE" "$ctx" >/dev/null 2>"$WORK/base-build.log"
  BERTH_ROOT=$WORK/base-root "$BERTH" save --format docker -o "$WORK/base.tar" "$BASE"
  "$DOCKER" load -q -i "$WORK/base.tar" >/dev/null
}

# The contexts are made once per size and kept under BENCH_DIR.
make_contexts() {
  COPY_CTX=$BENCH_DIR/context-copy-$CONTEXT_SIZE-$FILES
  if [[ ! -e $COPY_CTX/.done ]]; then
    log "generating the $CONTEXT_SIZE context (once)"
    rm -rf "$COPY_CTX"
    mkdir -p "$COPY_CTX/data/big" "$COPY_CTX/data/small"
    local bytes each i
    bytes=$(numfmt --from=iec "$CONTEXT_SIZE")
    each=$((bytes / FILES))
    for ((i = 0; i < FILES; i++)); do
      # openssl ends on SIGPIPE once head has its bytes.
      (
        set +o pipefail
        openssl enc -aes-128-ctr -nosalt -pass "pass:berth-bench-$i" -in /dev/zero 2>/dev/null |
          head -c "$each" >"$COPY_CTX/data/big/blob-$i.bin"
      )
    done
    for ((i = 0; i < 2000; i++)); do
      printf 'small file %d\n' "$i" >"$COPY_CTX/data/small/f-$i.txt"
    done
    printf 'FROM %s\nCOPY data/ /data/\n' "$BASE" >"$COPY_CTX/Dockerfile"
    touch "$COPY_CTX/.done"
  fi
  RUN_CTX=$WORK/context-run
  mkdir -p "$RUN_CTX"
  {
    printf 'FROM %s\n' "$BASE"
    for i in $(seq 1 10); do
      printf 'RUN mkdir -p /out/%d && cd /out/%d && for j in $(seq 1 200); do echo "step %d file $j" > f-$j.txt; done && head -c 4194304 /dev/urandom > blob.bin\n' "$i" "$i" "$i"
    done
  } >"$RUN_CTX/Dockerfile"
}

now() { date +%s.%N; }

# Prints the wall seconds of one build of CASE by TOOL (run number N).
build_once() {
  local tool=$1 case=$2 n=$3 ctx t0 t1 out=$WORK/out-$tool-$case-$n.tar
  case $case in
    copy-1g) ctx=$COPY_CTX ;;
    run-10) ctx=$RUN_CTX ;;
  esac
  sync
  if [[ $tool == berth ]]; then
    local root=$WORK/berth-root-$n
    rm -rf "$root"
    cp -a "$WORK/base-root" "$root"
    t0=$(now)
    BERTH_ROOT=$root "$BERTH" build -t "bench/$case:run$n" --output "type=oci,dest=$out" "$ctx" >/dev/null 2>"$WORK/berth-build.log"
    t1=$(now)
    rm -rf "$root"
  else
    t0=$(now)
    DOCKER_BUILDKIT=1 "$DOCKER" build -q --no-cache -t "bench/$case:run$n" "$ctx" >/dev/null
    "$DOCKER" save -o "$out" "bench/$case:run$n"
    t1=$(now)
    "$DOCKER" rmi -f "bench/$case:run$n" >/dev/null
  fi
  rm -f "$out"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

log "berth: $BERTH ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)); docker $("$DOCKER" version --format '{{.Server.Version}}')"
make_base
make_contexts
DOCKER_BUILDKIT=1 "$DOCKER" builder prune -af >/dev/null 2>&1 || true
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

declare -A TIMES
for ((n = 1; n <= RUNS; n++)); do
  for case in $CASES; do
    if ((n % 2)); then order="berth docker"; else order="docker berth"; fi
    for tool in $order; do
      t=$(build_once "$tool" "$case" "$n")
      TIMES[$tool-$case]+="$t "
      log "run $n: $case with $tool: ${t}s"
    done
    b=$(echo "${TIMES[berth-$case]}" | awk '{ print $NF }')
    d=$(echo "${TIMES[docker-$case]}" | awk '{ print $NF }')
    TIMES[ratio-$case]+="$(awk -v b="$b" -v d="$d" 'BEGIN { printf "%.3f", d / b }') "
  done
done

{
  printf 'Runs: %d; medians; %s CPUs, load average %s at the start and %s at the end; berth %s, docker %s.\n\n' \
    "$RUNS" "$(nproc)" "$START_LOAD" "$(cut -d' ' -f1-3 /proc/loadavg)" \
    "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$("$DOCKER" version --format '{{.Server.Version}}')"
  printf '| Case | berth (s) | docker (s) | docker/berth | Target | Met |\n|---|---|---|---|---|---|\n'
  for case in $CASES; do
    b=$(tr ' ' '\n' <<<"${TIMES[berth-$case]}" | sed '/^$/d' | median)
    d=$(tr ' ' '\n' <<<"${TIMES[docker-$case]}" | sed '/^$/d' | median)
    r=$(tr ' ' '\n' <<<"${TIMES[ratio-$case]}" | sed '/^$/d' | median)
    case $case in
      copy-1g) target=2 ;;
      run-10) target=1.3 ;;
    esac
    met=$(awk -v r="$r" -v t="$target" 'BEGIN { print (r >= t) ? "yes" : "**no**" }')
    printf '| %s | %s | %s | %sx | ≥ %sx | %s |\n' "$case" "$b" "$d" "$r" "$target" "$met"
  done
  printf '\nPer run (s): '
  for key in "${!TIMES[@]}"; do printf '%s: %s; ' "$key" "${TIMES[$key]}"; done
  printf '\n'
} | tee "$BENCH_DIR/last.md"
