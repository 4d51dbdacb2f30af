#!/usr/bin/env bash
# Build the notes-grpc Go server and conformance client.
#
# 1. Install the protoc plugins at the versions pinned by the `tool`
#    directives in go.mod (checked against go.sum) into build/bin.
# 2. Generate Go code from the shared scenario proto into notespb/
#    (git-ignored, never committed).
# 3. Build static, stripped binaries build/server and build/client.
set -euo pipefail

cd "$(dirname "$0")"
here=$PWD
proto_dir=$(cd ../../../scenarios/notes-grpc && pwd)

export GOFLAGS="${GOFLAGS:-} -mod=readonly"
export GOTOOLCHAIN=local

rm -rf build notespb
mkdir -p build/bin notespb

GOBIN="$here/build/bin" go install \
    google.golang.org/protobuf/cmd/protoc-gen-go \
    google.golang.org/grpc/cmd/protoc-gen-go-grpc

PATH="$here/build/bin:$PATH" protoc \
    --proto_path="$proto_dir" \
    --go_out=. --go_opt=module=langbench/notes-grpc \
    --go-grpc_out=. --go-grpc_opt=module=langbench/notes-grpc \
    "$proto_dir/notes.proto"

export CGO_ENABLED=0
for cmd in server client; do
    go build -trimpath -ldflags="-s -w" -o "build/$cmd" "./cmd/$cmd"
done
