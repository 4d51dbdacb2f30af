#!/usr/bin/env bash
# Build the pipeline Go node (one binary for nodes a, b and c).
#
# 1. Install the protoc plugins at the versions pinned by the `tool`
#    directives in go.mod (checked against go.sum) into build/bin.
# 2. Generate Go code from the shared scenario proto into pipelinepb/
#    (git-ignored, never committed).
# 3. Build the static, stripped binary build/pipeline.
set -euo pipefail

cd "$(dirname "$0")"
here=$PWD
proto_dir=$(cd ../../../scenarios/pipeline && pwd)

export GOFLAGS="${GOFLAGS:-} -mod=readonly"
export GOTOOLCHAIN=local

rm -rf build pipelinepb
mkdir -p build/bin pipelinepb

GOBIN="$here/build/bin" go install \
    google.golang.org/protobuf/cmd/protoc-gen-go \
    google.golang.org/grpc/cmd/protoc-gen-go-grpc

PATH="$here/build/bin:$PATH" protoc \
    --proto_path="$proto_dir" \
    --go_out=. --go_opt=module=langbench/pipeline \
    --go-grpc_out=. --go-grpc_opt=module=langbench/pipeline \
    "$proto_dir/pipeline.proto"

export CGO_ENABLED=0
go build -trimpath -ldflags="-s -w" -o build/pipeline .
