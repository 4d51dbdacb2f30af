#!/usr/bin/env bash
# Sets up everything langbench needs on a Debian 12 machine (idempotent):
#   - Debian packages: protobuf-compiler, python3-venv, wrk, nginx-light (the
#     reference null server of wrk's ceiling), chromium and chromium-driver
#     (the report's browser test), as root, when missing
#   - the Python virtual environment .venv with the harness (pip install -e .[test])
#   - the code counter scc (langbench effort) into tools/bin, from the Go module proxy
#   - the load tools into tools/bin: ghz from the Go module proxy; grpcload,
#     grpc-null, httpload, wsload and ws-null (tools/grpcload) from the Rust
#     crate registry
#   - the Docker engine (Debian's docker.io, as root, when no daemon answers)
#     and the local base images of the docker runtime (langbench images)
# Usage: ./setup.sh            (then .venv/bin/langbench ...)
set -euo pipefail
cd "$(dirname "$0")"

GHZ_VERSION="v0.93.0"   # github.com/bojand/ghz, the gRPC load tool
SCC_VERSION="v3.6.0"    # github.com/boyter/scc/v3, the code counter of `langbench effort` (harness/effort.py SCC_VERSION)

log() { printf '[setup] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- Debian packages
APT_PACKAGES=(protobuf-compiler python3-venv wrk nginx-light chromium chromium-driver)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "missing Debian packages: ${missing[*]} (run as root, or install them yourself)"
    exit 1
  fi
fi

# ---------------------------------------------------------------- toolchains
for tool in python3 go cargo java mvn; do
  command -v "$tool" >/dev/null || log "warning: '$tool' not on PATH: implementations that need it will be reported as failed"
done

# ---------------------------------------------------------------- Python venv
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import harness, psutil, jinja2, matplotlib, grpc, packaging, pytest, selenium" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.langbench-installed ]; then
  log "installing the harness into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch .venv/.langbench-installed
fi
# what the scenarios' own checks and tools import (scenario.toml [python] requires)
if ! .venv/bin/langbench deps >/dev/null 2>&1; then
  log "installing the scenarios' Python dependencies"
  .venv/bin/langbench deps --install >/dev/null
fi

# ---------------------------------------------------------------- load tools
mkdir -p tools/bin
if [ ! -x tools/bin/ghz ] || ! go version -m tools/bin/ghz 2>/dev/null | grep -q "ghz[[:space:]]*${GHZ_VERSION}"; then
  log "building ghz ${GHZ_VERSION} from the Go module proxy"
  GOBIN="$PWD/tools/bin" GOFLAGS=-mod=mod go install "github.com/bojand/ghz/cmd/ghz@${GHZ_VERSION}"
fi
# scc, the code counter of `langbench effort`, pinned. `go install` reads the
# module's version list for deprecation notices; where a proxy refuses that
# list, the same version is built from a temporary module instead.
if [ ! -x tools/bin/scc ] || ! go version -m tools/bin/scc 2>/dev/null | grep -q "scc/v3[[:space:]]*${SCC_VERSION}"; then
  log "building scc ${SCC_VERSION} from the Go module proxy"
  if ! GOBIN="$PWD/tools/bin" GOFLAGS=-mod=mod go install "github.com/boyter/scc/v3@${SCC_VERSION}" 2>/dev/null; then
    scc_tmp=$(mktemp -d)
    ( cd "$scc_tmp" && go mod init langbench-scc >/dev/null 2>&1 \
      && go get "github.com/boyter/scc/v3@${SCC_VERSION}" \
      && go build -trimpath -o "$OLDPWD/tools/bin/scc" github.com/boyter/scc/v3 )
    rm -rf "$scc_tmp"
  fi
fi
# grpcload (langbench's gRPC load generator), grpc-null (its reference null
# server), httpload (the HTTP/1.1 one), wsload (the WebSocket one) and
# ws-null (its reference echo server), from tools/grpcload and its
# Cargo.lock; rebuilt when a source file is newer than an installed binary
GRPCLOAD_BINS="grpcload grpc-null httpload wsload ws-null"
rebuild=0
for b in $GRPCLOAD_BINS; do
  if [ ! -x "tools/bin/$b" ] \
     || [ -n "$(find tools/grpcload/src tools/grpcload/Cargo.toml tools/grpcload/Cargo.lock -newer "tools/bin/$b" 2>/dev/null | head -1)" ]; then
    rebuild=1
  fi
done
if [ "$rebuild" = 1 ]; then
  log "building $GRPCLOAD_BINS (tools/grpcload) from the Rust crate registry"
  cargo build -q --release --locked --manifest-path tools/grpcload/Cargo.toml
  for b in $GRPCLOAD_BINS; do
    install -m 0755 "tools/grpcload/target/release/$b" tools/bin/
  done
fi
# ---------------------------------------------------------------- Docker engine and base images
# The docker runtime needs a Docker daemon and the local base images. Where no
# daemon answers and we are root on Debian, Debian's docker.io is installed
# and dockerd started in the background (these machines have no systemd).
# This happens here only, never in `langbench run`. LANGBENCH_NO_DOCKER=1
# skips the section (`--runtime auto` then uses the process runtime).
docker_answers() { .venv/bin/python -c "import docker; docker.from_env(timeout=5).ping()" >/dev/null 2>&1; }
DOCKERD_LOG="${LANGBENCH_DOCKERD_LOG:-/var/log/langbench-dockerd.log}"
if [ "${LANGBENCH_NO_DOCKER:-}" = "1" ]; then
  log "LANGBENCH_NO_DOCKER=1: skipping the Docker engine and base images"
elif docker_answers; then
  :
elif [ "$(id -u)" -eq 0 ] && [ -r /etc/debian_version ] && command -v apt-get >/dev/null; then
  docker_missing=()
  for p in docker.io debootstrap; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || docker_missing+=("$p")
  done
  if [ ${#docker_missing[@]} -gt 0 ]; then
    log "no Docker daemon answers: installing Debian packages ${docker_missing[*]} for the docker runtime"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${docker_missing[@]}" >/dev/null
  fi
  log "starting the Docker daemon: dockerd in the background, log in ${DOCKERD_LOG}"
  # The daemon outlives this script: it must not keep any descriptor this
  # script inherited (a lock held by whoever ran setup.sh, a pipe a caller
  # waits on), so every descriptor above 2 is closed before it starts.
  (
    for fd in /proc/$BASHPID/fd/*; do
      n=${fd##*/}
      if [ "$n" -gt 2 ] 2>/dev/null; then eval "exec $n>&-"; fi
    done
    exec setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 < /dev/null
  ) &
  for _ in $(seq 1 60); do docker_answers && break; sleep 1; done
  if docker_answers; then
    log "Docker daemon is up"
  else
    log "the Docker daemon did not answer within 60 s (see ${DOCKERD_LOG}); the docker runtime is unavailable"
  fi
else
  log "no Docker daemon answers and this is not root on Debian: the docker runtime is unavailable" \
      "(start a Docker daemon yourself; --runtime auto uses the process runtime meanwhile)"
fi
if [ "${LANGBENCH_NO_DOCKER:-}" != "1" ] && docker_answers; then
  if [ "$(id -u)" -eq 0 ] && ! command -v debootstrap >/dev/null && command -v apt-get >/dev/null; then
    log "installing debootstrap (the local base images are made from Debian packages)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
  fi
  .venv/bin/langbench images >/dev/null   # builds only the missing ones; prints its own progress
  log "base images: $(.venv/bin/python -c "from harness import images; print(', '.join(f\"{d['tag']} {d['size_mb']} MB\" for d in images.describe(images.client()) if d['present']))")"
fi

log "ready: $(.venv/bin/langbench --version), ghz $(go version -m tools/bin/ghz | awk '$1=="mod"{print $3}'), $(tools/bin/scc --version), $(tools/bin/grpcload --version), $(tools/bin/httpload --version), $(tools/bin/wsload --version), nginx $(/usr/sbin/nginx -v 2>&1 | sed 's|.*/||')"
