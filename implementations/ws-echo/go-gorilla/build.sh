#!/usr/bin/env bash
# Build the ws-echo Go (gorilla/websocket) server as a static, stripped binary:
# build/server. Dependencies are pinned by go.mod and checked against go.sum
# (-mod=readonly).
set -euo pipefail

cd "$(dirname "$0")"

export GOFLAGS="${GOFLAGS:-} -mod=readonly"
export GOTOOLCHAIN=local
export CGO_ENABLED=0

rm -rf build
mkdir -p build
go build -trimpath -ldflags="-s -w" -o build/server .
