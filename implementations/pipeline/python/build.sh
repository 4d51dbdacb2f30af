#!/usr/bin/env bash
# Host build: a virtualenv in .venv with the pinned requirements from PyPI
# (binary wheels only: nothing is compiled here), stubs generated from the
# scenario's pipeline.proto into gen/.
set -euo pipefail
cd "$(dirname "$0")"

PROTO_DIR=../../../scenarios/pipeline
PYTHON=${PYTHON:-python3}

rm -rf .venv gen
if ! "$PYTHON" -m venv .venv; then
    echo "build.sh: '$PYTHON -m venv' failed (on Debian: apt-get install python3-venv)" >&2
    exit 1
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-input \
    --only-binary=:all: -r requirements.txt

mkdir -p gen
# A copy of the contract travels with the build context for the Dockerfile.
cp "$PROTO_DIR/pipeline.proto" gen/pipeline.proto
.venv/bin/python -m grpc_tools.protoc -Igen \
    --python_out=gen --grpc_python_out=gen --pyi_out=gen pipeline.proto

# grpcio-tools is only needed to generate the stubs: keep the runtime venv lean.
.venv/bin/python -m pip uninstall --quiet --yes grpcio-tools setuptools
# Byte-compile our own sources and the stubs once.
.venv/bin/python -m compileall -q server.py node gen >/dev/null
echo "build.sh: ok ($(.venv/bin/python --version))" >&2
