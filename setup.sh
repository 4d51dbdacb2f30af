#!/usr/bin/env bash
# Sets up everything langbench needs on a Debian 12 machine (idempotent):
#   - Debian packages: protobuf-compiler, python3-venv (as root, when missing)
#   - the Python virtual environment .venv with the harness (pip install -e .[test])
#   - the load tools, built from the Go module proxy into tools/bin (ghz)
# Usage: ./setup.sh            (then .venv/bin/langbench ...)
set -euo pipefail
cd "$(dirname "$0")"

GHZ_VERSION="v0.93.0"   # github.com/bojand/ghz, the gRPC load tool

log() { printf '[setup] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- Debian packages
APT_PACKAGES=(protobuf-compiler python3-venv)
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
if ! .venv/bin/python -c "import harness, psutil, jinja2, matplotlib, grpc, grpc_tools, pytest" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.langbench-installed ]; then
  log "installing the harness into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch .venv/.langbench-installed
fi

# ---------------------------------------------------------------- load tools
mkdir -p tools/bin
if [ ! -x tools/bin/ghz ] || ! go version -m tools/bin/ghz 2>/dev/null | grep -q "ghz[[:space:]]*${GHZ_VERSION}"; then
  log "building ghz ${GHZ_VERSION} from the Go module proxy"
  GOBIN="$PWD/tools/bin" GOFLAGS=-mod=mod go install "github.com/bojand/ghz/cmd/ghz@${GHZ_VERSION}"
fi
log "ready: $(.venv/bin/langbench --version), ghz $(go version -m tools/bin/ghz | awk '$1=="mod"{print $3}')"
