#!/usr/bin/env bash
# Host build: a virtualenv in .venv with the pinned requirements from PyPI,
# stubs generated from the scenario's notes.proto into gen/.
set -euo pipefail
cd "$(dirname "$0")"

PROTO_DIR=../../../scenarios/notes-grpc
PYTHON=${PYTHON:-python3}

rm -rf .venv gen
if ! "$PYTHON" -m venv .venv; then
    echo "build.sh: '$PYTHON -m venv' failed (on Debian: apt-get install python3-venv)" >&2
    exit 1
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-input \
    -r requirements.txt

mkdir -p gen
# A copy of the contract travels with the build context for the Dockerfile.
cp "$PROTO_DIR/notes.proto" gen/notes.proto
.venv/bin/python -m grpc_tools.protoc -Igen \
    --python_out=gen --grpc_python_out=gen --pyi_out=gen notes.proto

# grpcio-tools is only needed to generate the stubs: keep the runtime venv lean.
.venv/bin/python -m pip uninstall --quiet --yes grpcio-tools setuptools
.venv/bin/python -m compileall -q gen >/dev/null
echo "build.sh: ok ($(.venv/bin/python --version))" >&2
