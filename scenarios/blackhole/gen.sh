#!/usr/bin/env bash
# Regenerates the FlatBuffers code of blackhole from schema/request.fbs with
# flatc 23.5.26, the version every implementation pins its FlatBuffers
# runtime to (Go github.com/google/flatbuffers v23.5.26, Rust flatbuffers
# 23.5.26, Python flatbuffers 23.5.26, Java com.google.flatbuffers
# flatbuffers-java 23.5.26). Debian's flatc is 2.0.8, too old for those
# runtimes; flatc 23.5.26 is built here from the source vendored in the
# crates.io `flatc` crate (flatc/: cargo + cmake, about 2 minutes once).
# The generated files are committed; tests/test_blackhole.py checks that they
# are what this script writes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
impl="$root/implementations/blackhole"
out="${1:-}"        # optional: write under this folder instead (the freshness test)
# a debug build: flatc only generates code here, and its C++ compiles in about
# two thirds of the release build's time (CI builds it from scratch)
cargo build --locked --quiet --manifest-path "$here/flatc/Cargo.toml"
flatc="$here/flatc/target/debug/blackhole-flatc"
fbs="$here/schema/request.fbs"
dest() { if [ -n "$out" ]; then echo "$out/$1"; else echo "$2"; fi; }
d=$(dest scenario-python "$here/gen/python");  mkdir -p "$d"; "$flatc" --python -o "$d" "$fbs"
d=$(dest go "$impl/go");                       mkdir -p "$d"; "$flatc" --go --go-namespace fbr -o "$d" "$fbs"
d=$(dest rust "$impl/rust/src");               mkdir -p "$d"; "$flatc" --rust -o "$d" "$fbs"
d=$(dest python "$impl/python");               mkdir -p "$d"; "$flatc" --python -o "$d" "$fbs"
d=$(dest scala "$impl/scala/src/main/java");   mkdir -p "$d"; "$flatc" --java -o "$d" "$fbs"
