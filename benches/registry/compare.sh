#!/usr/bin/env bash
# Side-by-side benchmark of `berth registry serve` against CNCF distribution (`docker-registry`),
# both run here, on different ports, each with a fresh root on the same filesystem, with the
# same clients and the same load. Every run measures both registries, and the order within
# each pair flips from one run to the next (A B, then B A, ...). Figures are medians over the
# runs; ratios are medians of the per-run ratios berth/distribution.
#
# Phases (each run does all the selected ones):
#   transfer  push then pull of a generated image (IMAGE_SIZE in LAYERS gzip layers of
#             incompressible bytes, cached under BENCH_DIR) with each client in CLIENTS:
#               skopeo copy --dest-tls-verify=false oci:IMAGE:bench docker://HOST/bench/img:runN
#               skopeo copy --src-tls-verify=false docker://HOST/bench/img:runN oci:OUT:bench
#             and the same two copies with `berth copy`. Throughput is image bytes over wall
#             seconds; the server's CPU time (user + system) is read from /proc for each
#             copy, a figure that the load of other processes disturbs less than wall time.
#             Each registry starts fresh for each client, so its peak RSS is that of one push
#             and one pull.
#             Each run also times every client alone, with no registry: a copy of the image
#             from oci:IMAGE to oci:OUT, which reads, hashes and writes the same bytes a push
#             and a pull do between them. Against the push + pull time through either registry
#             it shows how much of that time is the client's and the storage's own.
#   get       manifest GET by tag under load: `wrk -tWRK_THREADS -cWRK_CONNECTIONS -dDURATION
#             --timeout WRK_TIMEOUT --latency -s manifest-get.lua` (Accept: the OCI and Docker
#             manifest and index types) against a fresh registry holding one small image with
#             LAYERS layers; requests/s, p99 latency, and the server's peak RSS (VmHWM) after
#             the load.
#   upload    one BLOB_SIZE blob upload to a fresh registry: POST, then one streamed PATCH
#             (chunked, fed from a deterministic keystream, never stored), then PUT ?digest=;
#             throughput, the server's CPU time and its peak RSS. Done in the first
#             UPLOAD_RUNS runs only: a 4 GiB upload takes about a minute per registry here.
#
# Usage: benches/registry/compare.sh [--runs N] [--image-size SIZE] [--layers N]
#                                    [--blob-size SIZE] [--duration D] [--connections N]
#                                    [--upload-runs N] [--phases "transfer get upload"]
#                                    [--clients "skopeo berth"]
# The same settings come from the environment: RUNS (3), IMAGE_SIZE (1G), LAYERS (10),
# BLOB_SIZE (4G), UPLOAD_RUNS (1), WRK_DURATION (10s), WRK_CONNECTIONS (64), WRK_THREADS (2),
# WRK_TIMEOUT (10s: slow answers count in the latency instead of as errors), PHASES, CLIENTS,
# SEED (1), BENCH_DIR (/var/tmp/berth-bench-registry: cached images, the per-run roots and the
# clients' outputs; a directory on tmpfs such as /dev/shm/berth-bench takes the disk out of the
# comparison, since fsync costs nothing there),
# BERTH_PORT (5101), DIST_PORT (5102), CARGO_TARGET_DIR (target), BERTH_BIN (a berth binary
# to use instead of building target/release/berth).
# On a busy 2-core machine the defaults take about 9 minutes, plus about 1.5 minutes the first
# time to generate the image and hash the upload stream, plus whatever building berth takes.
# The markdown tables go to stdout and to BENCH_DIR/last.md; progress goes to stderr.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

RUNS=${RUNS:-3}
IMAGE_SIZE=${IMAGE_SIZE:-1G}
LAYERS=${LAYERS:-10}
BLOB_SIZE=${BLOB_SIZE:-4G}
UPLOAD_RUNS=${UPLOAD_RUNS:-1}
WRK_DURATION=${WRK_DURATION:-10s}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-2}
WRK_TIMEOUT=${WRK_TIMEOUT:-10s}
PHASES=${PHASES:-transfer get upload}
CLIENTS=${CLIENTS:-skopeo berth}
SEED=${SEED:-1}
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench-registry}
BERTH_PORT=${BERTH_PORT:-5101}
DIST_PORT=${DIST_PORT:-5102}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
log() { printf 'registry-bench %(%H:%M:%S)T [load %s] %s\n' -1 "$(cut -d' ' -f1 /proc/loadavg)" "$*" >&2; }
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
    --image-size) IMAGE_SIZE=$2 ;;
    --layers) LAYERS=$2 ;;
    --blob-size) BLOB_SIZE=$2 ;;
    --upload-runs) UPLOAD_RUNS=$2 ;;
    --duration) WRK_DURATION=$2 ;;
    --connections) WRK_CONNECTIONS=$2 ;;
    --phases) PHASES=$2 ;;
    --clients) CLIENTS=$2 ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
  shift 2
done

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "bad run count $RUNS"
[[ $UPLOAD_RUNS =~ ^[0-9]+$ ]] || die "bad upload run count $UPLOAD_RUNS"
for phase in $PHASES; do
  [[ $phase =~ ^(transfer|get|upload)$ ]] || die "unknown phase $phase"
done
for client in $CLIENTS; do
  [[ $client =~ ^(skopeo|berth)$ ]] || die "unknown client $client"
done
TIME=/usr/bin/time
for tool in skopeo docker-registry wrk curl openssl pigz tar sha256sum numfmt awk sed "$TIME"; do
  command -v "$tool" >/dev/null ||
    die "$tool is required (apt-get install -y skopeo docker-registry wrk curl openssl pigz)"
done
BLOB_BYTES=$(numfmt --from=iec "$BLOB_SIZE")
GEN=$HERE/gen-image.sh
POLICY=$HERE/policy.json
ACCEPT=$(sed -n 's/^ *"\(application[^"]*\)",$/\1/p' "$HERE/manifest-get.lua" | paste -sd, - | sed 's/,/, /g')

if [[ -n ${BERTH_BIN:-} ]]; then
  BERTH=$BERTH_BIN
else
  log "building berth (release)"
  (cd "$ROOT" && cargo build --release --quiet -p berth --bin berth)
  BERTH=$TARGET_DIR/release/berth
fi
[[ -x $BERTH ]] || die "$BERTH was not built"

mkdir -p "$BENCH_DIR"
IMAGE=$BENCH_DIR/image-$IMAGE_SIZE-$LAYERS-seed$SEED
SMALL=$BENCH_DIR/image-10K-$LAYERS-seed$SEED
for layout in "$IMAGE" "$SMALL"; do
  if [[ ! -e $layout ]]; then
    log "generating $layout (once)"
    size=${layout#"$BENCH_DIR"/image-}
    bash "$GEN" "$layout" "${size%%-*}" "$LAYERS" "$SEED" bench
  fi
done
# The manifest digest of a layout, and the bytes a push or a pull moves (all its blobs).
manifest_of() { sed -n 's/.*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p' "$1/index.json"; }
IMAGE_DIGEST=$(manifest_of "$IMAGE")
SMALL_DIGEST=$(manifest_of "$SMALL")
IMAGE_BYTES=$(find "$IMAGE/blobs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')

if [[ " $PHASES " == *" upload "* ]]; then
  BLOB_DIGEST_FILE=$BENCH_DIR/blob-$BLOB_SIZE-seed$SEED.sha256
  if [[ ! -s $BLOB_DIGEST_FILE ]]; then
    log "hashing the $BLOB_SIZE upload stream (once)"
    hex=$(bash "$GEN" stream "$BLOB_BYTES" "$SEED" blob | sha256sum | cut -d' ' -f1)
    printf 'sha256:%s\n' "$hex" >"$BLOB_DIGEST_FILE"
  fi
  BLOB_DIGEST=$(cat "$BLOB_DIGEST_FILE")
fi

WORK=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
RESULTS=$WORK/results
: >"$RESULTS"
declare -A PID=()
declare -A PORT=([berth]=$BERTH_PORT [distribution]=$DIST_PORT)

stop_server() {
  local name=$1 pid=${PID[$1]:-} i
  [[ -n $pid ]] || return 0
  unset "PID[$name]"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "${WORK:?}/root-$name"
}

cleanup() {
  local name
  for name in "${!PID[@]}"; do stop_server "$name"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Something already answers on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_server NAME: a fresh registry (empty root) on its port, once it answers /v2/.
start_server() {
  local name=$1 port=${PORT[$1]} root=$WORK/root-$1 i
  port_busy "$port" && die "127.0.0.1:$port is already in use (set BERTH_PORT / DIST_PORT)"
  rm -rf "$root"
  mkdir -p "$root"
  case $name in
    berth)
      BERTH_LOG=error "$BERTH" registry serve --addr "127.0.0.1:$port" --root "$root" \
        >"$WORK/$name.log" 2>&1 &
      ;;
    distribution)
      sed -e "s|@ROOT@|$root|" -e "s|@ADDR@|127.0.0.1:$port|" "$HERE/distribution.yml.in" \
        >"$WORK/distribution.yml"
      docker-registry serve "$WORK/distribution.yml" >"$WORK/$name.log" 2>&1 &
      ;;
  esac
  PID[$name]=$!
  for ((i = 0; i < 300; i++)); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null && return 0
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
      cat "$WORK/$name.log" >&2
      die "$name exited at start"
    fi
    sleep 0.1
  done
  die "$name does not answer on 127.0.0.1:$port"
}

# Peak resident set of a running server, in KiB.
peak_rss_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/${PID[$1]}/status"; }

# CPU time (user + system) of a running server so far, in seconds.
CLK_TCK=$(getconf CLK_TCK)
cpu_secs() {
  sed 's/^.*) //' "/proc/${PID[$1]}/stat" | awk -v hz="$CLK_TCK" '{ printf "%.2f", ($12 + $13) / hz }'
}

record() { printf '%s %s %s %s\n' "$@" >>"$RESULTS"; }

# timed VAR CMD...: runs CMD and stores its wall time in seconds in VAR.
timed() {
  local var=$1 t0 t1
  shift
  t0=$(date +%s%N)
  "$@"
  t1=$(date +%s%N)
  printf -v "$var" '%s' "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')"
}

# The order of a pair: berth first for even N, distribution first for odd N. Each measurement
# passes the run number plus an offset of its own, so its order flips from run to run and the
# measurements of one run do not all start with the same registry.
pair_order() {
  if (($1 % 2 == 0)); then echo berth distribution; else echo distribution berth; fi
}

# The clients run under /usr/bin/time, which leaves their CPU time in $WORK/client-cpu.
client_cpu() { awk '{ print $1 + $2 }' "$WORK/client-cpu"; }
push_skopeo() {
  "$TIME" -f '%U %S' -o "$WORK/client-cpu" \
    skopeo --policy "$POLICY" copy --quiet --dest-tls-verify=false "oci:$1:bench" "docker://$2"
}
pull_skopeo() {
  "$TIME" -f '%U %S' -o "$WORK/client-cpu" \
    skopeo --policy "$POLICY" copy --quiet --src-tls-verify=false "docker://$1" "oci:$2:bench"
}
push_berth() {
  "$TIME" -f '%U %S' -o "$WORK/client-cpu" \
    "$BERTH" copy --progress quiet --tmpdir "$WORK" "oci:$1:bench" "docker://$2" >/dev/null
}
pull_berth() {
  "$TIME" -f '%U %S' -o "$WORK/client-cpu" \
    "$BERTH" copy --progress quiet --tmpdir "$WORK" "docker://$1" "oci:$2:bench" >/dev/null
}
alone_skopeo() { skopeo --policy "$POLICY" copy --quiet "oci:$1:bench" "oci:$2:bench"; }
alone_berth() {
  "$BERTH" copy --progress quiet --tmpdir "$WORK" "oci:$1:bench" "oci:$2:bench" >/dev/null
}

transfer_phase() {
  local run=$1 client name ref out t_push t_pull t_alone c0 c1 c2 k_push k_pull offset=0
  for client in $CLIENTS; do
    offset=$((offset + 1))
    out=$WORK/alone
    rm -rf "$out"
    timed t_alone "alone_$client" "$IMAGE" "$out"
    grep -q "$IMAGE_DIGEST" "$out/index.json" || die "$client alone copied something else than $IMAGE_DIGEST"
    rm -rf "$out"
    record "$run" "alone.$client" client "$t_alone"
    log "run $run: $client alone: oci to oci ${t_alone}s"
    for name in $(pair_order $((run + offset))); do
      start_server "$name"
      ref=127.0.0.1:${PORT[$name]}/bench/img:run$run
      out=$WORK/pulled
      rm -rf "$out"
      c0=$(cpu_secs "$name")
      timed t_push "push_$client" "$IMAGE" "$ref"
      c1=$(cpu_secs "$name")
      k_push=$(client_cpu)
      timed t_pull "pull_$client" "$ref" "$out"
      c2=$(cpu_secs "$name")
      k_pull=$(client_cpu)
      grep -q "$IMAGE_DIGEST" "$out/index.json" ||
        die "$client pulled something else than $IMAGE_DIGEST from $name"
      record "$run" "push.$client" "$name" "$(awk -v b="$IMAGE_BYTES" -v t="$t_push" 'BEGIN { print b / 1e6 / t }')"
      record "$run" "pull.$client" "$name" "$(awk -v b="$IMAGE_BYTES" -v t="$t_pull" 'BEGIN { print b / 1e6 / t }')"
      record "$run" "xfer.$client" "$name" \
        "$(awk -v b="$IMAGE_BYTES" -v p="$t_push" -v q="$t_pull" 'BEGIN { print 2 * b / 1e6 / (p + q) }')"
      record "$run" "xfer_s.$client" "$name" "$(awk -v p="$t_push" -v q="$t_pull" 'BEGIN { print p + q }')"
      record "$run" "rss_xfer.$client" "$name" "$(peak_rss_kib "$name")"
      record "$run" "cpu_push.$client" "$name" "$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }')"
      record "$run" "cpu_pull.$client" "$name" "$(awk -v a="$c1" -v b="$c2" 'BEGIN { print b - a }')"
      record "$run" "client_push.$client" "$name" "$k_push"
      record "$run" "client_pull.$client" "$name" "$k_pull"
      log "run $run: $client via $name: push ${t_push}s, pull ${t_pull}s"
      stop_server "$name"
      rm -rf "$out"
    done
  done
}

# Latency figure of wrk (like 812.00us, 1.20ms, 2.01s) in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v) }
    else if (v ~ /m$/) { sub(/m$/, "", v); v *= 60000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
    print v
  }'
}

get_phase() {
  local run=$1 name url out rps p99 bad digest
  for name in $(pair_order "$run"); do
    start_server "$name"
    skopeo --policy "$POLICY" copy --quiet --dest-tls-verify=false "oci:$SMALL:bench" \
      "docker://127.0.0.1:${PORT[$name]}/bench/small:bench"
    url=http://127.0.0.1:${PORT[$name]}/v2/bench/small/manifests/bench
    digest=$(curl -fsS -H "Accept: $ACCEPT" -D - -o /dev/null "$url" | tr -d '\r' |
      awk 'tolower($1) == "docker-content-digest:" { print $2 }')
    [[ $digest == "$SMALL_DIGEST" ]] || die "$name answers $url with digest '$digest'"
    out=$WORK/wrk-$name-$run.txt
    wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"$WRK_DURATION" --timeout "$WRK_TIMEOUT" --latency \
      -s "$HERE/manifest-get.lua" "$url" >"$out"
    rps=$(awk '$1 == "Requests/sec:" { print $2 }' "$out")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    bad=$(awk '/Non-2xx or 3xx responses:/ { n += $NF } /Socket errors:/ { gsub(",", ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$out")
    ((bad == 0)) || log "warning: $name: $bad failed requests or socket errors during the load"
    record "$run" rps "$name" "$rps"
    record "$run" p99 "$name" "$p99"
    record "$run" get_errors "$name" "$bad"
    record "$run" rss_get "$name" "$(peak_rss_kib "$name")"
    log "run $run: manifest GET on $name: $rps req/s, p99 ${p99}ms, errors $bad"
    stop_server "$name"
  done
}

# location_of HEADERS BASE: the last Location header, made absolute.
location_of() {
  local loc
  loc=$(tr -d '\r' <"$1" | awk 'tolower($1) == "location:" { l = $2 } END { print l }')
  [[ -n $loc ]] || die "no Location in $(head -1 "$1")"
  if [[ $loc == /* ]]; then loc=$2$loc; fi
  printf '%s\n' "$loc"
}

# patch_blob LOCATION HEADERS: the whole blob in one chunked PATCH.
patch_blob() {
  bash "$GEN" stream "$BLOB_BYTES" "$SEED" blob |
    curl -fsS -X PATCH -H 'Content-Type: application/octet-stream' -H 'Expect:' -T - \
      -D "$2" -o /dev/null "$1"
}

# put_blob LOCATION: completes the upload; the answer must be 201.
put_blob() {
  local sep status
  if [[ $1 == *\?* ]]; then sep='&'; else sep='?'; fi
  status=$(curl -fsS -X PUT -H 'Content-Length: 0' -o /dev/null -w '%{http_code}' \
    "$1${sep}digest=$BLOB_DIGEST")
  [[ $status == 201 ]] || die "upload commit answered $status"
}

# upload_blob BASE: POST, PATCH, PUT; leaves the wall time of the PATCH and of the PUT in
# T_PATCH and T_PUT.
upload_blob() {
  local base=$1 hdr=$WORK/headers loc
  curl -fsS -X POST -D "$hdr" -o /dev/null "$base/v2/bench/big/blobs/uploads/"
  loc=$(location_of "$hdr" "$base")
  timed T_PATCH patch_blob "$loc" "$hdr"
  loc=$(location_of "$hdr" "$base")
  timed T_PUT put_blob "$loc"
}

upload_phase() {
  local run=$1 name base t size c0
  ((run <= UPLOAD_RUNS)) || return 0
  for name in $(pair_order $((run + 1))); do
    start_server "$name"
    base=http://127.0.0.1:${PORT[$name]}
    c0=$(cpu_secs "$name")
    timed t upload_blob "$base"
    record "$run" cpu_upload "$name" "$(awk -v a="$c0" -v b="$(cpu_secs "$name")" 'BEGIN { print b - a }')"
    size=$(curl -fsS -I -o /dev/null -w '%header{content-length}' "$base/v2/bench/big/blobs/$BLOB_DIGEST")
    [[ $size == "$BLOB_BYTES" ]] || die "$name holds $size bytes for the blob, not $BLOB_BYTES"
    record "$run" upload "$name" "$(awk -v b="$BLOB_BYTES" -v t="$t" 'BEGIN { print b / 1e6 / t }')"
    record "$run" rss_upload "$name" "$(peak_rss_kib "$name")"
    record "$run" patch_s "$name" "$T_PATCH"
    record "$run" put_s "$name" "$T_PUT"
    log "run $run: $BLOB_SIZE upload to $name: ${t}s (PATCH ${T_PATCH}s, PUT ${T_PUT}s), peak RSS $(peak_rss_kib "$name") KiB"
    stop_server "$name"
  done
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "image: $IMAGE ($IMAGE_BYTES bytes, $LAYERS layers); runs: $RUNS; phases: $PHASES; load average $LOAD_START"
for ((run = 1; run <= RUNS; run++)); do
  for phase in $PHASES; do
    "${phase}_phase" "$run"
  done
done

# summary METRIC: "berth_median distribution_median ratio_median berth_max" over the runs, the
# ratio taken per run.
summary() {
  awk -v m="$1" '
    function median(a, n,    i, j, t) {
      for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    $2 == m && $3 == "berth" { b[$1] = $4 }
    $2 == m && $3 == "distribution" { d[$1] = $4 }
    END {
      nb = nd = nr = 0; max = 0
      for (r in b) { vb[++nb] = b[r]; if (b[r] > max) max = b[r]; if (r in d && d[r] > 0) vr[++nr] = b[r] / d[r] }
      for (r in d) vd[++nd] = d[r]
      if (nb == 0 || nd == 0) { print "- - - -"; exit }
      print median(vb, nb), median(vd, nd), (nr ? median(vr, nr) : "-"), max
    }' "$RESULTS"
}

# row LABEL METRIC SCALE TARGET: one table line; SCALE divides the values (1024 for KiB -> MiB).
# TARGET: "min:X" (ratio at least X), "max:X" (ratio at most X), "abs:X" (berth's worst run
# below X after scaling), or "-" (reported only).
row() {
  local label=$1 metric=$2 scale=$3 target=$4 b d r max text met
  read -r b d r max < <(summary "$metric")
  [[ $b == - ]] && return 0
  case $target in
    min:*)
      text="≥ ${target#min:}x"
      met=$(awk -v r="$r" -v t="${target#min:}" 'BEGIN { print (r >= t ? "yes" : "**no**") }')
      ;;
    max:*)
      text="≤ ${target#max:}x"
      met=$(awk -v r="$r" -v t="${target#max:}" 'BEGIN { print (r <= t ? "yes" : "**no**") }')
      ;;
    abs:*)
      text="berth < ${target#abs:} MiB (worst run)"
      met=$(awk -v m="$max" -v s="$scale" -v t="${target#abs:}" 'BEGIN { print (m / s < t ? "yes" : "**no**") }')
      ;;
    *)
      text=""
      met=""
      ;;
  esac
  awk -v l="$label" -v b="$b" -v d="$d" -v r="$r" -v s="$scale" -v t="$text" -v m="$met" 'BEGIN {
    printf "| %s | %s | %s | %s | %s | %s |\n", l, f(b / s), f(d / s), (r == "-" ? "-" : sprintf("%.2fx", r)), t, m
  }
  function f(x) { return x >= 100 ? sprintf("%.0f", x) : (x >= 10 ? sprintf("%.1f", x) : sprintf("%.2f", x)) }'
}

table() {
  local client
  echo "| Measure | berth | distribution | berth/distribution | Target | Met |"
  echo "|---|---|---|---|---|---|"
  for client in $CLIENTS; do
    local c=$client
    [[ $c == berth ]] && c="berth copy"
    row "push + pull $IMAGE_SIZE, $c (MB/s)" "xfer.$client" 1 min:1.5
    row "push $IMAGE_SIZE, $c (MB/s)" "push.$client" 1 -
    row "pull $IMAGE_SIZE, $c (MB/s)" "pull.$client" 1 -
    row "peak RSS, push + pull with $c (MiB)" "rss_xfer.$client" 1024 -
  done
  row "manifest GET by tag, $WRK_CONNECTIONS connections (req/s)" rps 1 min:5
  row "manifest GET p99 latency (ms)" p99 1 -
  row "peak RSS under manifest GET load (MiB)" rss_get 1024 max:0.5
  row "$BLOB_SIZE blob upload, one streamed PATCH (MB/s)" upload 1 -
  row "peak RSS, $BLOB_SIZE blob upload (MiB)" rss_upload 1024 abs:64
}

# median METRIC NAME: the median over the runs of what NAME recorded for METRIC.
median() {
  awk -v m="$1" -v n="$2" '$2 == m && $3 == n { v[++k] = $4 }
    END {
      for (i = 2; i <= k; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
      if (k == 0) print "-"; else printf "%.2f", k % 2 ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
    }' "$RESULTS"
}

# Each client alone against its push + pull through each registry, in wall seconds, and the
# push + pull time that 1.5x distribution's throughput means.
alone_table() {
  local client c alone b d
  echo "| Client alone, no registry (s) | oci: to oci: | push + pull via berth | via distribution | 1.5x distribution's throughput |"
  echo "|---|---|---|---|---|"
  for client in $CLIENTS; do
    c=$client
    [[ $c == berth ]] && c="berth copy"
    alone=$(median "alone.$client" client)
    b=$(median "xfer_s.$client" berth)
    d=$(median "xfer_s.$client" distribution)
    [[ $alone == - ]] && continue
    awk -v c="$c" -v a="$alone" -v b="$b" -v d="$d" \
      'BEGIN { printf "| %s | %s | %s | %s | %.2f |\n", c, a, b, d, d / 1.5 }'
  done
}

# Where the time goes: CPU seconds (user + system) of the server and of the client, and the
# wall time of the two requests of the large upload.
cpu_table() {
  local client c
  echo "| Where the time goes (s) | berth | distribution | berth/distribution |"
  echo "|---|---|---|---|"
  for client in $CLIENTS; do
    c=$client
    [[ $c == berth ]] && c="berth copy"
    row "server CPU, push $IMAGE_SIZE with $c" "cpu_push.$client" 1 -
    row "client CPU ($c), same push" "client_push.$client" 1 -
    row "server CPU, pull $IMAGE_SIZE with $c" "cpu_pull.$client" 1 -
    row "client CPU ($c), same pull" "client_pull.$client" 1 -
  done
  row "server CPU, $BLOB_SIZE blob upload" cpu_upload 1 -
  row "wall, $BLOB_SIZE upload: the PATCH carrying the bytes" patch_s 1 -
  row "wall, $BLOB_SIZE upload: the PUT that commits" put_s 1 -
}

{
  echo "Runs: $RUNS ($((UPLOAD_RUNS < RUNS ? UPLOAD_RUNS : RUNS)) for the upload); figures are medians over the runs, ratios" \
    "medians of the per-run ratios. $(nproc) CPUs, load average $LOAD_START at the start and $(cut -d' ' -f1-3 /proc/loadavg) at the end;" \
    "berth $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')," \
    "distribution $(docker-registry --version | awk '{ print $3 }'), skopeo $(skopeo --version | awk '{ print $3 }')."
  echo
  table
  if [[ " $PHASES " == *" transfer "* || " $PHASES " == *" upload "* ]]; then
    echo
    cpu_table | sed 's/ |  |  |$/ |/'
  fi
  if [[ " $PHASES " == *" transfer "* ]]; then
    echo
    alone_table
  fi
  errors=$(awk '$2 == "get_errors" { n += $4 } END { print n + 0 }' "$RESULTS")
  if ((errors > 0)); then
    echo
    echo "Warning: $errors failed requests or socket errors under the manifest GET load."
  fi
} | tee "$BENCH_DIR/last.md"
cp "$RESULTS" "$BENCH_DIR/last-results.txt"
