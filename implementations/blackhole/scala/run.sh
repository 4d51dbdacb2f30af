#!/bin/sh
# Starts the blackhole server from the fat jar with the declared JVM tuning (see langbench.toml
# [tuning]). LANGBENCH_CPUS (default: all online CPUs) sizes the JVM's view of the machine: GC and
# JIT threads, Netty's event loops and the number of writer threads.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cpus=${LANGBENCH_CPUS:-$(nproc)}
export LANGBENCH_CPUS="$cpus"
exec java \
  -XX:ActiveProcessorCount="$cpus" \
  -XX:+UseSerialGC \
  -Xms128m -Xmx128m \
  -XX:+ExitOnOutOfMemoryError \
  -Dio.netty.leakDetection.level=disabled \
  -jar "$here/target/blackhole-scala.jar" "$@"
