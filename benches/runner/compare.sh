#!/usr/bin/env bash
# Side-by-side benchmark of berth's runner (`berth runner serve`: the control plane and this
# machine's agent) against docker (docker 20.10's daemon, as scripts/setup.sh starts it), on the
# same busybox image and the same machine, in one run.
#
# The image is made from busybox-static with `berth build` into berth's store for this run
# (BERTH_ROOT), as benches/build/compare.sh makes its base, and handed to docker with
# `berth save --format docker | docker load` under a tag of its own (removed at exit). Both sides
# start from a cached image: nothing is pulled.
#
# Cases:
#   ec2-host     `berth task run --launch-type EC2` of a task definition with networkMode host,
#                one container (`sleep 600`, 64 MiB), against `docker run -d --network host -m
#                64m IMAGE sleep 600`.
#   ec2-bridge   The same with networkMode bridge and a portMapping of containerPort 8080 to a
#                dynamic host port (busybox httpd), against `docker run -d -p 8080 -m 64m` of the
#                same httpd.
#   fargate      `--launch-type FARGATE` of an awsvpc task definition (cpu 256, memory 512, the
#                same httpd): a network namespace and address of its own, against `docker run
#                -d --cpus 0.25 -m 512m` of the same httpd on docker's default bridge.
#   replace      A service with desiredCount 1 (EC2, networkMode host) whose one container is
#                `sleep NUMBER`, the number new for every run. Once its task is RUNNING, that
#                process is found by its exact command line (`pgrep -f '^sleep NUMBER$'`) and
#                sent SIGKILL; timed from the kill until `berth task ps --json` shows a RUNNING
#                task of group `service:NAME` with another ARN. Also timed: until the killed
#                task is no longer RUNNING there. docker has no services: berth's figure only.
#
# Times are wall milliseconds (`date +%s%N`). berth: `berth task run --wait`, which returns once
# DescribeTasks (polled every 10 ms from the same process) shows the task RUNNING, as `aws ecs
# wait tasks-running` does; also given, the task's own startedAt - createdAt
# as the API reports it. docker: from just before `docker run -d` until `docker inspect` says
# the container runs (`docker run -d` returns once it has started it, so one inspect suffices).
# Between runs each task is stopped and seen STOPPED (`berth task stop`; the containers have a
# stopTimeout of 1 s, since sleep and httpd as PID 1 ignore SIGTERM) and each container removed
# (`docker rm -f`), untimed. The order of the tools flips from one run to the next. Figures are
# medians over the runs; ratios are medians of the per-run ratios docker/berth (above 1: berth
# is faster). Target for the three start cases: berth at least 2x faster than docker.
#
# With --with-lb, the load balancer's own benchmark (`lb-bench`, berth_runner::lb against a
# direct connection) also runs, with --runs N, after the runner is shut down, and its table
# follows. It is built with `cargo build --release -p berth-benches --bin lb-bench` at the start
# unless LB_BENCH_BIN names a binary.
#
# Usage: benches/runner/compare.sh [--runs N] [--cases "ec2-host ec2-bridge fargate replace"]
#                                  [--with-lb]
# The same settings come from the environment: RUNS (5), CASES, WITH_LB (1 for --with-lb),
# BERTH_BIN (a release berth with the runner, default target/release/berth; it is copied into
# the run's directory before use, as another build may replace it), LB_BENCH_BIN, BENCH_DIR
# (/var/tmp/berth-bench-runner: the run's temporary directory, removed at exit, and last.md),
# WAIT_SECS (60: the longest any one wait for a state may take before the script fails).
# Needs root (task networking), runc, jq, curl, python3 and the docker daemon.
# The markdown table goes to stdout and to BENCH_DIR/last.md; progress goes to stderr.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/busybox.sh
source "$HERE/../lib/busybox.sh"
ROOT=$(cd "$HERE/../.." && pwd)

RUNS=${RUNS:-5}
CASES=${CASES:-ec2-host ec2-bridge fargate replace}
WITH_LB=${WITH_LB:-0}
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench-runner}
BERTH_SRC=${BERTH_BIN:-$ROOT/target/release/berth}
WAIT_SECS=${WAIT_SECS:-60}
DOCKER=/usr/bin/docker
IMAGE=berth-bench-runner/busybox:latest
LABEL=berth-bench-runner

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
log() { printf 'runner-bench %(%H:%M:%S)T [load %s] %s\n' -1 "$(cut -d' ' -f1 /proc/loadavg)" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

while [[ $# -gt 0 ]]; do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --with-lb)
      WITH_LB=1
      shift
      continue
      ;;
  esac
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
[[ $WAIT_SECS =~ ^[1-9][0-9]*$ ]] || die "bad WAIT_SECS $WAIT_SECS"
[[ $WITH_LB == 0 || $WITH_LB == 1 ]] || die "WITH_LB is 0 or 1, not $WITH_LB"
for case in $CASES; do
  [[ $case =~ ^(ec2-host|ec2-bridge|fargate|replace)$ ]] || die "unknown case $case (ec2-host, ec2-bridge, fargate, replace)"
done
want() { [[ " $CASES " == *" $1 "* ]]; }
START_CASES=
for case in ec2-host ec2-bridge fargate; do
  want "$case" && START_CASES+="$case "
done

[[ $(id -u) -eq 0 ]] || die "run as root: the runner's tasks need network namespaces, bridges and cgroups"
for tool in "$DOCKER" busybox runc jq curl python3 pgrep awk sort date; do
  command -v "$tool" >/dev/null || die "$tool is required (bash scripts/setup.sh installs them)"
done
[[ -x $BERTH_SRC ]] || die "no berth binary at $BERTH_SRC: build one (cargo build --release -p berth --bin berth) or set BERTH_BIN"
if ! "$DOCKER" info >/dev/null 2>&1; then
  die "the docker daemon does not answer: start it with 'bash scripts/setup.sh' (it runs /usr/sbin/dockerd, log in /var/log/dockerd.log)"
fi

LB_BENCH=
if ((WITH_LB)); then
  if [[ -n ${LB_BENCH_BIN:-} ]]; then
    LB_BENCH=$LB_BENCH_BIN
  else
    log "building lb-bench (cargo build --release -p berth-benches --bin lb-bench)"
    (cd "$ROOT" && cargo build --release --quiet -p berth-benches --bin lb-bench) || die "lb-bench did not build"
    LB_BENCH=${CARGO_TARGET_DIR:-$ROOT/target}/release/lb-bench
  fi
  [[ -x $LB_BENCH ]] || die "no lb-bench binary at $LB_BENCH"
fi

mkdir -p "$BENCH_DIR"
WORK=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
SERVE_PID=
AGENT_PID=

# Stops this run's control plane and agent: SIGTERM to the agent (it stops its tasks and tells
# the control plane), up to 40 s, then SIGKILL; then the same for the control plane. Safe to
# call twice.
stop_runner() {
  local pid what i
  if [[ -z $AGENT_PID && -s $WORK/runner/agent/agent.lock ]]; then
    AGENT_PID=$(tr -dc '0-9' <"$WORK/runner/agent/agent.lock")
  fi
  for what in agent serve; do
    if [[ $what == agent ]]; then pid=$AGENT_PID; else pid=$SERVE_PID; fi
    [[ -n $pid ]] || continue
    if kill -TERM "$pid" 2>/dev/null; then
      for ((i = 0; i < 400; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      if kill -0 "$pid" 2>/dev/null; then
        log "the $what (pid $pid) did not exit within 40 s of SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
    [[ $what == serve ]] && wait "$pid" 2>/dev/null || true
    if [[ $what == agent ]]; then AGENT_PID=; else SERVE_PID=; fi
  done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_runner
  local ids
  ids=$("$DOCKER" ps -aq --filter "label=$LABEL=$$" 2>/dev/null || true)
  [[ -z $ids ]] || "$DOCKER" rm -f $ids >/dev/null 2>&1 || true
  "$DOCKER" rmi "$IMAGE" >/dev/null 2>&1 || true
  if ((rc != 0)) && [[ -d $WORK ]]; then
    for f in "$WORK/serve.log" "$WORK/runner/agent/agent.log"; do
      [[ -s $f ]] || continue
      log "the end of $f:"
      tail -n 20 "$f" | sed 's/^/    /' >&2
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The binary is copied aside: the agent is started from the same file (`runner serve` runs its
# own executable), and a build meanwhile must not replace it.
BERTH=$WORK/berth
cp "$BERTH_SRC" "$BERTH"
SERVE_HELP=$("$BERTH" runner serve --help 2>&1 || true)
if [[ $SERVE_HELP != *--no-local-agent* ]]; then
  die "$BERTH_SRC is no berth with 'runner serve': build a current one (cargo build --release -p berth --bin berth)"
fi
export BERTH_ROOT=$WORK/store
COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
DOCKER_VERSION=$("$DOCKER" version --format '{{.Server.Version}}')
log "berth: $BERTH_SRC (workspace at $COMMIT); docker $DOCKER_VERSION; $(nproc) CPUs"

now() { date +%s%N; }
ms_since() { echo $((($(now) - $1) / 1000000)); }

# --- the image ------------------------------------------------------------------------------

# busybox-static and its applet links, /etc/passwd and /etc/group.
make_image() {
  local ctx=$WORK/image
  busybox_context "$ctx"
  "$BERTH" build -t "$IMAGE" "$ctx" >"$WORK/image-build.log" 2>&1 ||
    die "berth could not build the image: $(tail -n 20 "$WORK/image-build.log")"
  "$BERTH" save --format docker -o "$WORK/image.tar" "$IMAGE" || die "berth save --format docker $IMAGE failed"
  "$DOCKER" load -q -i "$WORK/image.tar" >/dev/null || die "docker load of $IMAGE failed"
  rm -f "$WORK/image.tar"
}

# --- the runner -----------------------------------------------------------------------------

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_runner() {
  local port i
  port=$(free_port)
  export BERTH_RUNNER_URL=http://127.0.0.1:$port
  "$BERTH" runner serve --addr "127.0.0.1:$port" --root "$WORK/runner" >"$WORK/serve.log" 2>&1 &
  SERVE_PID=$!
  for ((i = 0; ; i++)); do
    curl -sf "$BERTH_RUNNER_URL/healthz" >/dev/null 2>&1 && break
    kill -0 "$SERVE_PID" 2>/dev/null || die "berth runner serve exited: $(tail -n 20 "$WORK/serve.log")"
    ((i < WAIT_SECS * 10)) || die "the control plane did not answer $BERTH_RUNNER_URL/healthz within $WAIT_SECS s"
    sleep 0.1
  done
  # The agent holds its lock file, with its pid in it, for its whole life.
  for ((i = 0; ; i++)); do
    if [[ -s $WORK/runner/agent/agent.lock ]]; then
      AGENT_PID=$(tr -dc '0-9' <"$WORK/runner/agent/agent.lock")
      [[ -n $AGENT_PID ]] && break
    fi
    ((i < WAIT_SECS * 10)) || die "the local agent did not start (no pid in $WORK/runner/agent/agent.lock)"
    sleep 0.1
  done
  # Tasks need the agent registered: its container instance, and the FARGATE pool it serves.
  for ((i = 0; ; i++)); do
    [[ $("$BERTH" cluster ls --json 2>/dev/null | jq '[.clusters[] | select(.clusterName == "default") | .registeredContainerInstancesCount] | first // 0') -ge 1 ]] && break
    kill -0 "$AGENT_PID" 2>/dev/null || die "the local agent exited: $(tail -n 20 "$WORK/runner/agent/agent.log")"
    ((i < WAIT_SECS * 10)) || die "the local agent did not register within $WAIT_SECS s"
    sleep 0.1
  done
  log "control plane at $BERTH_RUNNER_URL (pid $SERVE_PID), agent pid $AGENT_PID"
}

# The task's lastStatus (STOPPED if the control plane no longer knows it).
task_status() {
  local out
  out=$("$BERTH" task describe --json "$1" 2>/dev/null) || {
    echo STOPPED
    return
  }
  jq -r '.tasks[0].lastStatus // "STOPPED"' <<<"$out"
}

# wait_task_status ID STATUS...: polls until the task's lastStatus is one of STATUS; prints it.
wait_task_status() {
  local id=$1 deadline s w
  shift
  deadline=$(($(now) + WAIT_SECS * 1000000000))
  while :; do
    s=$(task_status "$id")
    for w in "$@"; do
      if [[ $s == "$w" ]]; then
        echo "$s"
        return
      fi
    done
    (($(now) < deadline)) || die "task $id is still $s after $WAIT_SECS s (waiting for $*)"
  done
}

stop_task() {
  "$BERTH" task stop "$1" >/dev/null
  wait_task_status "$1" STOPPED >/dev/null
}

register() {
  local file=$WORK/taskdef-$1.json
  cat >"$file"
  "$BERTH" taskdef register "$file" >/dev/null || die "cannot register $file: $(cat "$file")"
}

HTTPD='["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"]'

register_definitions() {
  register ec2-host <<EOF
{"family": "bench-ec2-host", "networkMode": "host",
 "containerDefinitions": [{"name": "app", "image": "$IMAGE", "memory": 64, "stopTimeout": 1,
   "command": ["sleep", "600"]}]}
EOF
  register ec2-bridge <<EOF
{"family": "bench-ec2-bridge", "networkMode": "bridge",
 "containerDefinitions": [{"name": "app", "image": "$IMAGE", "memory": 64, "stopTimeout": 1,
   "portMappings": [{"containerPort": 8080}], "command": $HTTPD}]}
EOF
  register fargate <<EOF
{"family": "bench-fargate", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
 "requiresCompatibilities": ["FARGATE"],
 "containerDefinitions": [{"name": "app", "image": "$IMAGE", "stopTimeout": 1,
   "portMappings": [{"containerPort": 8080}], "command": $HTTPD}]}
EOF
}

# --- one start ------------------------------------------------------------------------------

# start_berth CASE: sets MS (task run -> RUNNING) and API_MS (startedAt - createdAt).
MS=
API_MS=
start_berth() {
  local case=$1 launch=EC2 t0 id s out
  [[ $case == fargate ]] && launch=FARGATE
  sync
  t0=$(now)
  id=$("$BERTH" task run --wait 60 --task-definition "bench-$case" --launch-type "$launch") ||
    die "berth task run --wait --task-definition bench-$case --launch-type $launch failed"
  MS=$(ms_since "$t0")
  s=$(wait_task_status "$id" RUNNING STOPPED)
  out=$("$BERTH" task describe --json "$id")
  [[ $s == RUNNING ]] || die "task $id stopped instead of running: $(jq -c '.tasks[0] | {stoppedReason, containers: [.containers[] | {name, reason, exitCode}]}' <<<"$out")"
  API_MS=$(jq -r '.tasks[0] | if .startedAt and .createdAt then ((.startedAt - .createdAt) * 1000 | round) else "n/a" end' <<<"$out")
  stop_task "$id"
}

start_docker() {
  local case=$1 t0 c args=()
  case $case in
    ec2-host) args=(--network host -m 64m "$IMAGE" sleep 600) ;;
    ec2-bridge) args=(-p 8080 -m 64m "$IMAGE" sh -c 'mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www') ;;
    fargate) args=(--cpus 0.25 -m 512m "$IMAGE" sh -c 'mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www') ;;
  esac
  sync
  t0=$(now)
  c=$("$DOCKER" run -d --label "$LABEL=$$" "${args[@]}") || die "docker run ${args[*]} failed"
  local deadline=$(($(now) + WAIT_SECS * 1000000000))
  while [[ $("$DOCKER" inspect -f '{{.State.Running}}' "$c") != true ]]; do
    (($(now) < deadline)) || die "docker container $c is not running after $WAIT_SECS s"
  done
  MS=$(ms_since "$t0")
  "$DOCKER" rm -f "$c" >/dev/null
}

# --- replacing a failed task ----------------------------------------------------------------

# The RUNNING tasks of group service:NAME, one ARN a line.
service_running() {
  local out
  out=$("$BERTH" task ps --json) || die "berth task ps --json failed"
  jq -r --arg g "service:$1" '.tasks[] | select(.group == $g and .lastStatus == "RUNNING") | .taskArn' <<<"$out"
}

# replace_once N: sets REPLACE_MS (kill -> a new task RUNNING) and DOWN_MS (kill -> the killed
# task no longer RUNNING).
REPLACE_MS=
DOWN_MS=
replace_once() {
  local n=$1 name number first pids pid t0 deadline running down_ms= out
  name=bench-replace-$$-$n
  number=$((600000000 + $$ * 1000 + n))
  register "replace-$n" <<EOF
{"family": "$name", "networkMode": "host",
 "containerDefinitions": [{"name": "app", "image": "$IMAGE", "memory": 64, "stopTimeout": 1,
   "command": ["sleep", "$number"]}]}
EOF
  "$BERTH" service create "$name" --task-definition "$name" --desired-count 1 >/dev/null
  deadline=$(($(now) + WAIT_SECS * 1000000000))
  while :; do
    first=$(service_running "$name" | head -n 1)
    pids=$(pgrep -f "^sleep $number\$" || true)
    [[ -n $first && -n $pids ]] && break
    (($(now) < deadline)) || die "service $name has no RUNNING task with its process after $WAIT_SECS s"
    sleep 0.05
  done
  [[ $(wc -w <<<"$pids") -eq 1 ]] || die "more than one process runs 'sleep $number': $pids"
  pid=$pids
  sync
  t0=$(now)
  kill -KILL "$pid"
  deadline=$(($(now) + WAIT_SECS * 1000000000))
  while :; do
    running=$(service_running "$name")
    if [[ -z $down_ms ]] && ! awk -v f="$first" '$0 == f { found = 1 } END { exit !found }' <<<"$running"; then
      down_ms=$(ms_since "$t0")
    fi
    if awk -v f="$first" 'NF && $0 != f { found = 1 } END { exit !found }' <<<"$running"; then
      REPLACE_MS=$(ms_since "$t0")
      break
    fi
    (($(now) < deadline)) || die "service $name has no new RUNNING task $WAIT_SECS s after its task's process was killed"
  done
  DOWN_MS=${down_ms:-$REPLACE_MS}
  # Untimed: the service goes, and its tasks with it.
  "$BERTH" service rm --force "$name" >/dev/null
  deadline=$(($(now) + WAIT_SECS * 1000000000))
  while :; do
    out=$("$BERTH" task ps --all --json) || die "berth task ps --all --json failed"
    [[ -n $(jq -r --arg g "service:$name" '.tasks[] | select(.group == $g and .lastStatus != "STOPPED") | .taskArn' <<<"$out") ]] || break
    (($(now) < deadline)) || die "the tasks of service $name are not all STOPPED $WAIT_SECS s after service rm --force"
    sleep 0.1
  done
}

# --- the run --------------------------------------------------------------------------------

declare -A TIMES=()
record() { TIMES[$1]+="$2 "; }
last() { awk '{ print $NF }' <<<"${TIMES[$1]}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0) ? a / b : 0 }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
med() { tr ' ' '\n' <<<"${TIMES[$1]:-}" | sed '/^$/d; /^n\/a$/d' | median; }
order() { if (($1 % 2)); then echo "berth docker"; else echo "docker berth"; fi; }

make_image
start_runner
register_definitions
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

if [[ -n $START_CASES ]]; then
  # One untimed start each, so that the first timed one finds what later ones find (the image's
  # snapshots extracted, the bridge up, docker's network set up).
  for case in $START_CASES; do
    start_berth "$case"
    start_docker "$case"
  done
fi
for ((n = 1; n <= RUNS; n++)); do
  for case in $START_CASES; do
    for tool in $(order "$n"); do
      if [[ $tool == berth ]]; then
        start_berth "$case"
        record "berth-$case" "$MS"
        record "api-$case" "$API_MS"
        log "run $n: $case with berth: RUNNING after $MS ms (startedAt - createdAt: $API_MS ms)"
      else
        start_docker "$case"
        record "docker-$case" "$MS"
        log "run $n: $case with docker: running after $MS ms"
      fi
    done
    record "ratio-$case" "$(ratio "$(last "docker-$case")" "$(last "berth-$case")")"
  done
  if want replace; then
    replace_once "$n"
    record replace "$REPLACE_MS"
    record replace-down "$DOWN_MS"
    log "run $n: replace: the killed task not RUNNING after $DOWN_MS ms, a new one RUNNING after $REPLACE_MS ms"
  fi
done
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
log "shutting the runner down"
stop_runner

LB_TABLE=
if ((WITH_LB)); then
  log "running lb-bench --runs $RUNS"
  LB_TABLE=$("$LB_BENCH" --runs "$RUNS") || die "lb-bench failed"
fi

# --- the table ------------------------------------------------------------------------------

x() { [[ $1 == n/a ]] && echo n/a || awk -v r="$1" 'BEGIN { printf "%.2fx", r }'; }
ms() { [[ $1 == n/a ]] && echo n/a || awk -v v="$1" 'BEGIN { printf "%.0f", v }'; }
secs() { [[ $1 == n/a ]] && echo n/a || awk -v v="$1" 'BEGIN { printf "%.2f", v / 1000 }'; }
{
  printf 'Runs: %d; medians; %s CPUs, load average %s at the start and %s at the end; berth %s, docker %s.\n\n' \
    "$RUNS" "$(nproc)" "$START_LOAD" "$END_LOAD" "$COMMIT" "$DOCKER_VERSION"
  if [[ -n $START_CASES ]]; then
    printf '| Start of a cached image, until RUNNING | berth (ms) | docker (ms) | docker/berth | Target | Met | berth startedAt - createdAt (ms) |\n'
    printf '|---|---|---|---|---|---|---|\n'
    for case in $START_CASES; do
      case $case in
        ec2-host) what='EC2, networkMode host (`sleep 600`) / `docker run --network host`' ;;
        ec2-bridge) what='EC2, networkMode bridge, dynamic host port (httpd) / `docker run -p 8080`' ;;
        fargate) what='FARGATE, awsvpc (httpd) / `docker run` on its default bridge' ;;
      esac
      r=$(med "ratio-$case")
      met=$(awk -v r="$r" 'BEGIN { print (r >= 2) ? "yes" : "**no**" }')
      printf '| %s | %s | %s | %s | ≥ 2x | %s | %s |\n' "$what" "$(ms "$(med "berth-$case")")" \
        "$(ms "$(med "docker-$case")")" "$(x "$r")" "$met" "$(ms "$(med "api-$case")")"
    done
  fi
  if want replace; then
    [[ -z $START_CASES ]] || printf '\n'
    printf '| Replacing a failed task (service, desiredCount 1; its process SIGKILLed) | berth (s) |\n|---|---|\n'
    printf '| until the killed task is no longer RUNNING | %s |\n' "$(secs "$(med replace-down)")"
    printf '| until a new task of the service is RUNNING | %s |\n' "$(secs "$(med replace)")"
  fi
  printf '\nPer run (ms; ratios as fractions): '
  for key in $(printf '%s\n' "${!TIMES[@]}" | sort); do printf '%s: %s; ' "$key" "${TIMES[$key]% }"; done
  printf '\n'
  if [[ -n $LB_TABLE ]]; then
    printf '\nLoad balancer (`lb-bench --runs %d`):\n\n%s\n' "$RUNS" "$LB_TABLE"
  fi
} | tee "$BENCH_DIR/last.md"
