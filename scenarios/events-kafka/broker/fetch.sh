#!/usr/bin/env bash
# Fetch the Apache Kafka broker (kafka_2.13 and its runtime dependencies) from
# Maven Central into broker/lib (ignored by git). Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
if [ -f lib/.complete ] && [ lib/.complete -nt pom.xml ]; then
  exit 0
fi
rm -rf lib
mvn -B -q dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime
touch lib/.complete
