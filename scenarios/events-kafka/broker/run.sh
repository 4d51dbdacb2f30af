#!/usr/bin/env bash
# Run a single-node Apache Kafka broker in KRaft mode on loopback.
# Environment: KAFKA_PORT, KAFKA_CONTROLLER_PORT, KAFKA_DATA_DIR (formatted on
# first start, reused on restart), KAFKA_HEAP (default 512m).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${KAFKA_PORT:?}" "${KAFKA_CONTROLLER_PORT:?}" "${KAFKA_DATA_DIR:?}"
mkdir -p "$KAFKA_DATA_DIR"
cfg="$KAFKA_DATA_DIR/server.properties"
cat > "$cfg" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:${KAFKA_CONTROLLER_PORT}
listeners=PLAINTEXT://127.0.0.1:${KAFKA_PORT},CONTROLLER://127.0.0.1:${KAFKA_CONTROLLER_PORT}
advertised.listeners=PLAINTEXT://127.0.0.1:${KAFKA_PORT}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=${KAFKA_DATA_DIR}/log
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
PROPS
cp_="$here/lib/*"
jvm=(-Xms"${KAFKA_HEAP:-512m}" -Xmx"${KAFKA_HEAP:-512m}" -XX:+UseG1GC -Djava.awt.headless=true
     -Dlog4j.configuration="file:$here/log4j.properties")
if [ ! -f "$KAFKA_DATA_DIR/log/meta.properties" ]; then
  cluster_id=$(java -cp "$cp_" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
  java "${jvm[@]}" -cp "$cp_" kafka.tools.StorageTool format -t "$cluster_id" -c "$cfg" >&2
fi
exec java "${jvm[@]}" -cp "$cp_" kafka.Kafka "$cfg"
