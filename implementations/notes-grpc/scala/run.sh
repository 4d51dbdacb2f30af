#!/bin/sh
# Starts the notes-grpc server from the fat jar with the declared JVM tuning.
# LANGBENCH_CPUS (default: all online CPUs) sizes the JVM's view of the machine
# (GC threads, compiler threads, common pool) and the Netty event loops.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cpus=${LANGBENCH_CPUS:-$(nproc)}
export LANGBENCH_CPUS="$cpus"
exec java \
  -XX:ActiveProcessorCount="$cpus" \
  -Xms256m -Xmx256m \
  -XX:+UseParallelGC \
  -XX:+ExitOnOutOfMemoryError \
  -Djava.util.logging.SimpleFormatter.format='%1$tFT%1$tT.%1$tL %4$s %3$s: %5$s%6$s%n' \
  -jar "$here/target/notes-grpc-scala.jar" "$@"
