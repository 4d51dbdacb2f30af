#!/bin/sh
# Starts one node of the pipeline (LANGBENCH_NODE = a, b or c) from the fat jar with the declared
# JVM tuning (langbench.toml [tuning]). LANGBENCH_CPUS (default: all online CPUs) sizes the JVM's
# view of the machine (GC and JIT threads) and the Netty event loops.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cpus=${LANGBENCH_CPUS:-$(nproc)}
export LANGBENCH_CPUS="$cpus"
# C keeps every committed id with its digest in memory (the at-most-once set): a larger old generation.
case "${LANGBENCH_NODE:-}" in
  c) heap=512m ;;
  *) heap=256m ;;
esac
exec java \
  -XX:ActiveProcessorCount="$cpus" \
  -XX:+UseSerialGC \
  -Xms"$heap" -Xmx"$heap" -Xmn64m \
  -XX:+ExitOnOutOfMemoryError \
  -Dio.grpc.netty.shaded.io.netty.leakDetection.level=disabled \
  -jar "$here/target/pipeline-scala.jar" "$@"
