#!/bin/sh
# The reader: reader.sh DIR prints one JSON line about the recordings in DIR (exit 0: all decoded).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec java -XX:+UseSerialGC -cp "$here/target/blackhole-scala.jar" blackhole.Reader "$@"
