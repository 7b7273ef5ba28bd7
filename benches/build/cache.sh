#!/usr/bin/env bash
# Side-by-side benchmark of `berth build`'s build cache and parallel stages against `docker
# build` (docker 20.10's daemon with BuildKit, DOCKER_BUILDKIT=1), on the same busybox base and
# the same contexts, in one run on the same machine. Both build with `--progress plain`, output
# to a log; every figure is the wall time of the build command (`date +%s%N` around it), in
# milliseconds, the median over the runs; ratios are medians of the per-run ratios. The order
# of the tools flips from one run to the next, and `sync` runs before every timed build.
# The base is made from busybox-static with `berth build` (into berth's store for this run) and
# handed to docker with `berth save --format docker | docker load`, as compare.sh does. berth's
# store is a fresh directory per run of this script (BERTH_ROOT); docker's build cache is pruned
# once at the start (`docker builder prune -af`).
#
# Cases:
#   noop     A Dockerfile FROM the base with 30 steps (RUN, COPY of small context files, ENV,
#            WORKDIR, LABEL), built once to warm the cache, then rebuilt with nothing changed.
#            berth must print CACHED for all 30 steps. Target: berth < 150 ms and <= 0.2x docker.
#   edit     The same file; `COPY app.txt /app/` is step 16 of 31. Each run writes new content
#            to app.txt, then both rebuild. berth's plain progress must show CACHED for steps
#            2-15 and for none of steps 16-31 (checked on docker's output too, for the steps it
#            shows); the script fails if not.
#   stages   Stages a, b, c, d each `RUN sleep 2 && echo X > /X`, then a final `FROM base` with
#            four `COPY --from`; built with --no-cache: berth with `--jobs 4` and with its
#            default jobs (the number of CPUs), docker as it is. Also a build of one such stage
#            alone, and the ratio of the four-stage build to it. Target: berth --jobs 4 <= 1.3x.
#
# berth cases need the cache and parallel stages: when `berth build --help` lists no
# `--no-cache`, berth's figures for all cases are n/a (its builds of the contexts still run
# once, untimed, as a check); without `--jobs`, the `--jobs 4` figures are n/a.
#
# Usage: benches/build/cache.sh [--runs N] [--cases "noop edit stages"]
# The same settings come from the environment: RUNS (5), CASES, BERTH_BIN (the berth binary,
# default target/release/berth; copy a release build aside first, as another build may replace
# it), BENCH_DIR (/var/tmp/berth-bench-build: the run's temporary directory, removed at exit,
# and cache-last.md).
# The markdown table goes to stdout and to BENCH_DIR/cache-last.md; progress goes to stderr.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/busybox.sh
source "$HERE/../lib/busybox.sh"
ROOT=$(cd "$HERE/../.." && pwd)

RUNS=${RUNS:-5}
CASES=${CASES:-noop edit stages}
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench-build}
BERTH=${BERTH_BIN:-$ROOT/target/release/berth}
DOCKER=/usr/bin/docker
BASE=berth-bench/busybox:latest
TAG=berth-bench-cache
STEPS=30     # steps after FROM in the noop/edit Dockerfile
APP_STEP=16  # the `COPY app.txt /app/` step, counting FROM as step 1

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
log() { printf 'cache-bench %(%H:%M:%S)T [load %s] %s\n' -1 "$(cut -d' ' -f1 /proc/loadavg)" "$*" >&2; }
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
    *)
      usage >&2
      exit 2
      ;;
  esac
  shift 2
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "bad run count $RUNS"
for case in $CASES; do
  [[ $case =~ ^(noop|edit|stages)$ ]] || die "unknown case $case (noop, edit, stages)"
done
want() { [[ " $CASES " == *" $1 "* ]]; }

for tool in "$DOCKER" busybox awk sort date; do
  command -v "$tool" >/dev/null || die "$tool is required (bash scripts/setup.sh installs it)"
done
[[ -x $BERTH ]] || die "no berth binary at $BERTH: build one (cargo build --release -p berth --bin berth), copy it aside and set BERTH_BIN"
if ! "$DOCKER" info >/dev/null 2>&1; then
  die "the docker daemon does not answer at $("$DOCKER" context inspect --format '{{.Endpoints.docker.Host}}' 2>/dev/null || echo /var/run/docker.sock): start it with 'bash scripts/setup.sh' (it runs /usr/sbin/dockerd, log in /var/log/dockerd.log)"
fi
export DOCKER_BUILDKIT=1

# What this berth can do.
BERTH_HELP=$("$BERTH" build --help 2>&1) || die "$BERTH build --help failed: $BERTH_HELP"
has_flag() { grep -qE -- "(^|[[:space:],])$1([[:space:]=,]|$)" <<<"$BERTH_HELP"; }
HAS_CACHE=no
HAS_JOBS=no
has_flag --no-cache && HAS_CACHE=yes
has_flag --jobs && HAS_JOBS=yes

mkdir -p "$BENCH_DIR"
WORK=$(mktemp -d "$BENCH_DIR/cache.XXXXXX")
cleanup() {
  "$DOCKER" rmi -f "$TAG/steps30" "$TAG/stages" "$TAG/one" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export BERTH_ROOT=$WORK/berth-root

COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
DOCKER_VERSION=$("$DOCKER" version --format '{{.Server.Version}}')
log "berth: $BERTH (workspace at $COMMIT; cache: $HAS_CACHE, --jobs: $HAS_JOBS); docker $DOCKER_VERSION; $(nproc) CPUs"

# --- contexts -------------------------------------------------------------------------------

# The base: busybox-static and its applet links, /etc/passwd and /etc/group.
make_base() {
  local ctx=$WORK/base
  busybox_context "$ctx"
  "$BERTH" build -t "$BASE" "$ctx" >"$WORK/base-build.log" 2>&1 ||
    die "berth could not build the base image: $(tail -n 20 "$WORK/base-build.log")"
  "$BERTH" save --format docker -o "$WORK/base.tar" "$BASE"
  "$DOCKER" load -q -i "$WORK/base.tar" >/dev/null
  rm -f "$WORK/base.tar"
}

# 30 steps after FROM: 10 RUN, 6 COPY (app.txt at step 16), 5 ENV, 4 WORKDIR, 5 LABEL.
make_steps_context() {
  STEPS_CTX=$WORK/steps30
  mkdir -p "$STEPS_CTX/files"
  local i kinds=(RUN COPY ENV RUN WORKDIR LABEL)
  for i in $(seq 1 "$STEPS"); do
    printf 'context file %d\n' "$i" >"$STEPS_CTX/files/f$i.txt"
  done
  printf 'initial\n' >"$STEPS_CTX/app.txt"
  {
    printf 'FROM %s\n' "$BASE"
    for i in $(seq 1 "$STEPS"); do
      if ((i + 1 == APP_STEP)); then
        printf 'COPY app.txt /app/\n'
        continue
      fi
      case ${kinds[(i - 1) % ${#kinds[@]}]} in
        RUN) printf 'RUN mkdir -p /out && echo "step %d" > /out/s%d.txt && ls / > /out/ls%d.txt\n' "$i" "$i" "$i" ;;
        COPY) printf 'COPY files/f%d.txt /files/\n' "$i" ;;
        ENV) printf 'ENV STEP_%d=value-%d PATH_%d=/opt/%d\n' "$i" "$i" "$i" "$i" ;;
        WORKDIR) printf 'WORKDIR /work/w%d\n' "$i" ;;
        LABEL) printf 'LABEL org.example.step%d="step %d"\n' "$i" "$i" ;;
      esac
    done
  } >"$STEPS_CTX/Dockerfile"
  local copy_line
  copy_line=$(grep -n '^COPY app.txt /app/$' "$STEPS_CTX/Dockerfile" | cut -d: -f1)
  [[ $copy_line == "$APP_STEP" ]] || die "internal: COPY app.txt is on line $copy_line, not $APP_STEP"
}

make_stages_context() {
  STAGES_CTX=$WORK/stages
  mkdir -p "$STAGES_CTX"
  local s
  {
    for s in a b c d; do
      printf 'FROM %s AS %s\nRUN sleep 2 && echo %s > /%s\n\n' "$BASE" "$s" "$s" "$s"
    done
    printf 'FROM %s\n' "$BASE"
    for s in a b c d; do
      printf 'COPY --from=%s /%s /%s\n' "$s" "$s" "$s"
    done
  } >"$STAGES_CTX/Dockerfile.stages"
  printf 'FROM %s AS a\nRUN sleep 2 && echo a > /a\n' "$BASE" >"$STAGES_CTX/Dockerfile.one"
}

# --- building and timing --------------------------------------------------------------------

# build TOOL LOG [ARGS...] (berth) or build docker LOG [ARGS...]: one build with plain progress,
# its output in LOG; sets MS to its wall time in milliseconds. Fails the script with the end of
# the log if the build fails.
MS=
build() {
  local tool=$1 logf=$2 t0 t1 rc=0
  shift 2
  sync
  t0=$(date +%s%N)
  if [[ $tool == berth ]]; then
    "$BERTH" build --progress plain "$@" >"$logf" 2>&1 || rc=$?
  else
    "$DOCKER" build --progress plain "$@" >"$logf" 2>&1 || rc=$?
  fi
  t1=$(date +%s%N)
  if ((rc != 0)); then
    tail -n 30 "$logf" >&2
    die "$tool build $* failed (exit $rc; log above)"
  fi
  MS=$(((t1 - t0) / 1000000))
}

# step_states LOG DOCKERFILE prints "K STATE" for each step of DOCKERFILE (one instruction a
# line, all distinct, so step K is line K) that LOG shows. LOG is plain progress as BuildKit
# prints it: `#N [stage K/TOTAL] INSTRUCTION` then `#N CACHED` for a step served from the cache.
# A step is found by its instruction text, since docker counts no ENV or LABEL in K/TOTAL; failing
# that, by K when TOTAL is the number of lines. STATE is CACHED or RAN.
step_states() {
  awk '
    FNR == NR { sub(/[[:space:]]+$/, ""); line[$0] = FNR; lines = FNR; next }
    /^#[0-9]+ \[/ {
      id = $1
      s = $0; sub(/^#[0-9]+ \[/, "", s)
      text = s; sub(/^[^]]*\][[:space:]]*/, "", text); sub(/[[:space:]]+$/, "", text)
      sub(/\].*$/, "", s); n = split(s, f, " "); split(f[n], kt, "/")
      if (text in line) step[id] = line[text]
      else if (f[n] ~ /^[0-9]+\/[0-9]+$/ && kt[2] == lines) step[id] = kt[1] + 0
      next
    }
    /^#[0-9]+ CACHED[[:space:]]*$/ { cached[$1] = 1 }
    END {
      for (id in step) print step[id], ((id in cached) ? "CACHED" : "RAN")
    }' "$2" "$1" | sort -n -u
}

# check_states TOOL LOG FIRST_RAN WHAT: steps 2..FIRST_RAN-1 must be CACHED and steps
# FIRST_RAN..TOTAL must not (FIRST_RAN = TOTAL+1: all cached). berth must show every step;
# docker shows no vertex for ENV and LABEL, so only the steps it shows are checked.
check_states() {
  local tool=$1 logf=$2 first_ran=$3 what=$4 total=$((STEPS + 1)) k state seen=0 bad=
  local -A got=()
  while read -r k state; do
    got[$k]=$state
  done < <(step_states "$logf" "$STEPS_CTX/Dockerfile")
  for ((k = 2; k <= total; k++)); do
    state=${got[$k]:-}
    if [[ -z $state ]]; then
      [[ $tool == berth ]] && bad+=" $k:missing"
      continue
    fi
    seen=$((seen + 1))
    if ((k < first_ran)); then
      [[ $state == CACHED ]] || bad+=" $k:$state"
    else
      [[ $state != CACHED ]] || bad+=" $k:$state"
    fi
  done
  ((seen > 0)) || bad+=" (no steps found in the log)"
  if [[ -n $bad ]]; then
    sed 's/^/    /' "$logf" | tail -n 80 >&2
    if ((first_ran > total)); then
      die "$what: $tool's progress is wrong for steps:$bad (expected CACHED for all of 2-$total; log above)"
    fi
    die "$what: $tool's progress is wrong for steps:$bad (expected CACHED for 2-$((first_ran - 1)), not CACHED for $first_ran-$total; log above)"
  fi
  CHECKED[$tool-$what]=$seen
}

declare -A TIMES=() CHECKED=()
record() { TIMES[$1]+="$2 "; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0) ? a / b : 0 }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
med() { tr ' ' '\n' <<<"${TIMES[$1]:-}" | sed '/^$/d' | median; }
order() { if (($1 % 2)); then echo "berth docker"; else echo "docker berth"; fi; }

# --- the run --------------------------------------------------------------------------------

make_base
make_steps_context
make_stages_context
"$DOCKER" builder prune -af >/dev/null 2>&1 || true
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
L=$WORK/logs
mkdir -p "$L"

if want noop || want edit; then
  log "warm builds of the 30-step Dockerfile"
  build berth "$L/berth-warm.log" -t "$TAG/steps30" "$STEPS_CTX"
  log "  berth: ${MS} ms (cold)"
  build docker "$L/docker-warm.log" -t "$TAG/steps30" "$STEPS_CTX"
  log "  docker: ${MS} ms (cold)"
  if [[ $HAS_CACHE == yes ]]; then
    # One untimed no-op rebuild each, so the first timed one finds what later ones find.
    build berth "$L/berth-warm2.log" -t "$TAG/steps30" "$STEPS_CTX"
    check_states berth "$L/berth-warm2.log" $((STEPS + 2)) noop
  fi
  build docker "$L/docker-warm2.log" -t "$TAG/steps30" "$STEPS_CTX"
  check_states docker "$L/docker-warm2.log" $((STEPS + 2)) noop
fi

if want noop; then
  for ((n = 1; n <= RUNS; n++)); do
    for tool in $(order "$n"); do
      [[ $tool == docker || $HAS_CACHE == yes ]] || continue
      build "$tool" "$L/$tool-noop-$n.log" -t "$TAG/steps30" "$STEPS_CTX"
      check_states "$tool" "$L/$tool-noop-$n.log" $((STEPS + 2)) noop
      record "$tool-noop" "$MS"
      log "run $n: no-op rebuild with $tool: ${MS} ms"
    done
    [[ $HAS_CACHE == yes ]] || continue
    b=$(awk '{ print $NF }' <<<"${TIMES[berth-noop]}")
    d=$(awk '{ print $NF }' <<<"${TIMES[docker-noop]}")
    record ratio-noop "$(ratio "$b" "$d")"
  done
fi

if want edit; then
  for ((n = 1; n <= RUNS; n++)); do
    # New content every run, and unlike any earlier run of this script (docker's cache outlives it).
    printf 'edited: run %d of pid %d at %s\n' "$n" "$$" "$(date +%s%N)" >"$STEPS_CTX/app.txt"
    for tool in $(order "$n"); do
      if [[ $tool == berth && $HAS_CACHE != yes ]]; then
        # Keep berth's image in step with the context, untimed, as a check that it builds.
        build berth "$L/berth-edit-$n.log" -t "$TAG/steps30" "$STEPS_CTX"
        continue
      fi
      build "$tool" "$L/$tool-edit-$n.log" -t "$TAG/steps30" "$STEPS_CTX"
      check_states "$tool" "$L/$tool-edit-$n.log" "$APP_STEP" edit
      record "$tool-edit" "$MS"
      log "run $n: rebuild after editing app.txt with $tool: ${MS} ms"
    done
    [[ $HAS_CACHE == yes ]] || continue
    b=$(awk '{ print $NF }' <<<"${TIMES[berth-edit]}")
    d=$(awk '{ print $NF }' <<<"${TIMES[docker-edit]}")
    record ratio-edit "$(ratio "$b" "$d")"
  done
fi

if want stages; then
  S=$STAGES_CTX
  log "warm-up builds of the stage Dockerfiles (untimed)"
  if [[ $HAS_CACHE == yes ]]; then nc=(--no-cache); else nc=(); fi
  build berth "$L/berth-stages-warm.log" "${nc[@]}" -t "$TAG/stages" -f "$S/Dockerfile.stages" "$S"
  log "  berth, four stages${nc[*]:+ (${nc[*]})}: ${MS} ms"
  build docker "$L/docker-stages-warm.log" --no-cache -t "$TAG/stages" -f "$S/Dockerfile.stages" "$S"
  log "  docker, four stages (--no-cache): ${MS} ms"
  for ((n = 1; n <= RUNS; n++)); do
    for tool in $(order "$n"); do
      if [[ $tool == docker ]]; then
        build docker "$L/docker-one-$n.log" --no-cache -t "$TAG/one" -f "$S/Dockerfile.one" "$S"
        one=$MS
        record docker-one "$one"
        build docker "$L/docker-stages-$n.log" --no-cache -t "$TAG/stages" -f "$S/Dockerfile.stages" "$S"
        record docker-stages "$MS"
        record docker-stages-ratio "$(ratio "$MS" "$one")"
        log "run $n: docker: one stage $one ms, four stages $MS ms"
        continue
      fi
      [[ $HAS_CACHE == yes ]] || continue
      build berth "$L/berth-one-$n.log" --no-cache -t "$TAG/one" -f "$S/Dockerfile.one" "$S"
      one=$MS
      record berth-one "$one"
      build berth "$L/berth-stages-default-$n.log" --no-cache -t "$TAG/stages" -f "$S/Dockerfile.stages" "$S"
      record berth-stages-default "$MS"
      record berth-stages-default-ratio "$(ratio "$MS" "$one")"
      msg="one stage $one ms, four stages (default jobs) $MS ms"
      if [[ $HAS_JOBS == yes ]]; then
        build berth "$L/berth-stages-j4-$n.log" --no-cache --jobs 4 -t "$TAG/stages" -f "$S/Dockerfile.stages" "$S"
        record berth-stages-j4 "$MS"
        record berth-stages-j4-ratio "$(ratio "$MS" "$one")"
        msg+=", four stages (--jobs 4) $MS ms"
      fi
      log "run $n: berth: $msg"
    done
    if [[ $HAS_JOBS == yes ]]; then
      record ratio-stages-j4 "$(ratio "$(awk '{ print $NF }' <<<"${TIMES[berth-stages-j4]}")" "$(awk '{ print $NF }' <<<"${TIMES[docker-stages]}")")"
    fi
    if [[ $HAS_CACHE == yes ]]; then
      record ratio-stages-default "$(ratio "$(awk '{ print $NF }' <<<"${TIMES[berth-stages-default]}")" "$(awk '{ print $NF }' <<<"${TIMES[docker-stages]}")")"
    fi
  done
fi

# --- the table ------------------------------------------------------------------------------

x() { [[ $1 == n/a ]] && echo n/a || awk -v r="$1" 'BEGIN { printf "%.2fx", r }'; }
ms() { [[ $1 == n/a ]] && echo n/a || awk -v v="$1" 'BEGIN { printf "%.0f", v }'; }
yesno() { [[ $1 == 1 ]] && echo yes || echo '**no**'; }
{
  printf 'Runs: %d; medians (ms: wall time of the build command); %s CPUs, load average %s at the start and %s at the end; berth %s (cache: %s, --jobs: %s), docker %s with BuildKit.\n\n' \
    "$RUNS" "$(nproc)" "$START_LOAD" "$(cut -d' ' -f1-3 /proc/loadavg)" "$COMMIT" "$HAS_CACHE" "$HAS_JOBS" "$DOCKER_VERSION"
  printf '| Case | berth (ms) | docker (ms) | berth/docker | Target | Met |\n|---|---|---|---|---|---|\n'
  if want noop; then
    b=$(ms "$(med berth-noop)") d=$(ms "$(med docker-noop)") r=$(med ratio-noop)
    met=n/a
    [[ $b == n/a ]] || met=$(yesno "$(awk -v b="$b" -v r="$r" 'BEGIN { print (b < 150 && r <= 0.2) ? 1 : 0 }')")
    printf '| no-op rebuild, 30 steps | %s | %s | %s | < 150 ms, ≤ 0.2x | %s |\n' "$b" "$d" "$(x "$r")" "$met"
  fi
  if want edit; then
    printf '| rebuild after editing app.txt (step %d of %d) | %s | %s | %s | | |\n' \
      "$APP_STEP" $((STEPS + 1)) "$(ms "$(med berth-edit)")" "$(ms "$(med docker-edit)")" "$(x "$(med ratio-edit)")"
  fi
  if want stages; then
    j4=n/a
    [[ $HAS_JOBS == yes ]] && j4=$(ms "$(med berth-stages-j4)")
    printf '| 4 stages + final, --no-cache, berth --jobs 4 | %s | %s | %s | | |\n' \
      "$j4" "$(ms "$(med docker-stages)")" "$(x "$(med ratio-stages-j4)")"
    printf '| 4 stages + final, --no-cache, berth default jobs (%s) | %s | %s | %s | | |\n' \
      "$(nproc)" "$(ms "$(med berth-stages-default)")" "$(ms "$(med docker-stages)")" "$(x "$(med ratio-stages-default)")"
    r=n/a
    [[ $HAS_CACHE == yes ]] && r=$(ratio "$(med berth-one)" "$(med docker-one)")
    printf '| one stage alone, --no-cache | %s | %s | %s | | |\n' "$(ms "$(med berth-one)")" "$(ms "$(med docker-one)")" "$(x "$r")"
    r=n/a
    [[ $HAS_JOBS == yes ]] && r=$(med berth-stages-j4-ratio)
    met=n/a
    [[ $r == n/a ]] || met=$(yesno "$(awk -v r="$r" 'BEGIN { print (r <= 1.3) ? 1 : 0 }')")
    printf '| 4 stages / one stage, berth --jobs 4 | %s | %s | | ≤ 1.3x | %s |\n' "$(x "$r")" "$(x "$(med docker-stages-ratio)")" "$met"
    printf '| 4 stages / one stage, berth default jobs (%s) | %s | %s | | | |\n' \
      "$(nproc)" "$(x "$(med berth-stages-default-ratio)")" "$(x "$(med docker-stages-ratio)")"
  fi
  want noop || want edit && printf '\nChecks (every run): '
  want noop && printf 'no-op rebuilds: berth %s, docker %s; ' \
    "$([[ $HAS_CACHE == yes ]] && echo "all $STEPS steps CACHED" || echo n/a)" \
    "all ${CHECKED[docker-noop]:-0} steps it shows CACHED"
  want edit && printf 'after the edit: berth %s, docker %s; ' \
    "$([[ $HAS_CACHE == yes ]] && echo "steps 2-$((APP_STEP - 1)) CACHED, $APP_STEP-$((STEPS + 1)) not" || echo n/a)" \
    "the same for the ${CHECKED[docker-edit]:-0} steps it shows"
  printf '\n\nPer run (ms; ratios as fractions): '
  for key in $(printf '%s\n' "${!TIMES[@]}" | sort); do printf '%s: %s; ' "$key" "${TIMES[$key]% }"; done
  printf '\n'
} | tee "$BENCH_DIR/cache-last.md"
