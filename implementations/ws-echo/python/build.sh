#!/usr/bin/env bash
# Host build: a virtualenv in .venv with the pinned requirements from PyPI
# (binary wheels only: nothing is compiled here). server.py runs from this
# folder with .venv/bin/python.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}

rm -rf .venv
if ! "$PYTHON" -m venv .venv; then
    echo "build.sh: '$PYTHON -m venv' failed (on Debian: apt-get install python3-venv)" >&2
    exit 1
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-input \
    --only-binary=:all: -r requirements.txt
# pip and setuptools are not needed at run time: keep the runtime venv lean.
.venv/bin/python -m pip uninstall --quiet --yes setuptools 2>/dev/null || true
# Byte-compile our own source once (the venv's packages were compiled by pip).
.venv/bin/python -m compileall -q server.py >/dev/null
echo "build.sh: ok ($(.venv/bin/python --version))" >&2
