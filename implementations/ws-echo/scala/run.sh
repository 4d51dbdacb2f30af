#!/bin/sh
# Starts the ws-echo server from the fat jar with the declared JVM tuning (see langbench.toml
# [tuning]). LANGBENCH_CPUS (default: all online CPUs) sizes the JVM's view of the machine (GC and
# JIT threads, Netty's allocator arenas) and the number of Netty event-loop threads.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cpus=${LANGBENCH_CPUS:-$(nproc)}
export LANGBENCH_CPUS="$cpus"
exec java \
  -XX:ActiveProcessorCount="$cpus" \
  -XX:+UseSerialGC \
  -Xms128m -Xmx128m \
  -XX:MaxDirectMemorySize=256m \
  -XX:+ExitOnOutOfMemoryError \
  -Xlog:gc:stderr:uptime \
  -Dio.netty.leakDetection.level=disabled \
  -jar "$here/target/ws-echo-scala.jar" "$@"
