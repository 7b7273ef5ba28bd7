#!/usr/bin/env bash
# Prepares a Debian 12 machine for berth's quick start and test suite. Idempotent: installs only
# the packages that are missing and starts dockerd only when no daemon answers.
set -euo pipefail

PACKAGES=(
  docker.io        # docker engine + containerd: docker load/run/push/pull in interop tests
  skopeo           # OCI/docker archive and registry interop
  runc             # the OCI runtime the sandbox uses
  iproute2 iptables  # task networking: bridges, namespaces, veth pairs, NAT (runner/tests/net.rs)
  util-linux       # nsenter: agents on other network "hosts" (tests/runner_e2e.rs)
  busybox-static   # base images for tests (no network to pull from)
  pigz zstd        # compression baselines and output checks
  docker-registry  # CNCF distribution, the peer registry
  podman           # second registry client in the interop tests
  tar gzip coreutils
  curl python3     # the quick start: registry readiness, a free port
  hyperfine time   # benchmarks: repeated timings, peak RSS
  wrk              # benchmarks: HTTP load on the registry
  jq               # benchmarks: the runner's JSON answers (benches/runner/compare.sh)
)

log() { printf 'setup: %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo
else
  SUDO=
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "system packages present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  log "cargo not found: install a Rust toolchain (rustup) first"
  exit 1
fi

# The Debian client speaks to the Debian daemon; /usr/local/bin/docker may be a newer client.
DOCKER=/usr/bin/docker
if ! $DOCKER info >/dev/null 2>&1; then
  log "starting dockerd"
  (setsid $SUDO /usr/sbin/dockerd >/var/log/dockerd.log 2>&1 &)
  for _ in $(seq 1 120); do
    if $DOCKER info >/dev/null 2>&1; then break; fi
    sleep 0.5
  done
  if ! $DOCKER info >/dev/null 2>&1; then
    log "dockerd did not come up; see /var/log/dockerd.log"
    tail -n 20 /var/log/dockerd.log >&2 || true
    exit 1
  fi
fi
log "docker $($DOCKER version --format '{{.Server.Version}}') is up"
