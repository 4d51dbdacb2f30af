#!/bin/sh
# Starts the events-kafka server from the fat jar with the declared JVM tuning.
# LANGBENCH_CPUS (default: all online CPUs) sizes the JVM's view of the machine:
# GC and JIT threads and the cats-effect compute pool (which runs Ember).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cpus=${LANGBENCH_CPUS:-$(nproc)}
export LANGBENCH_CPUS="$cpus"
exec java \
  -XX:ActiveProcessorCount="$cpus" \
  -Xms256m -Xmx256m \
  -XX:+UseParallelGC \
  -XX:+ExitOnOutOfMemoryError \
  -jar "$here/target/events-kafka-scala.jar" "$@"
