"""Small Kafka admin steps the harness runs for events-kafka.

    python kafka_tool.py ready --bootstrap HOST:PORT          exit 0 once the broker answers metadata
    python kafka_tool.py create-topic --bootstrap HOST:PORT --topic NAME
"""
from __future__ import annotations

import argparse
import sys

from confluent_kafka.admin import AdminClient, NewTopic


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 3000,
                        "log_level": 0})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=["ready", "create-topic"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic")
    args = ap.parse_args(argv)
    a = admin(args.bootstrap)
    if args.action == "ready":
        try:
            md = a.list_topics(timeout=3)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready yet
            print(f"not ready: {exc}", file=sys.stderr)
            return 1
        return 0 if md.brokers else 1
    if not args.topic:
        ap.error("--topic is required")
    futures = a.create_topics([NewTopic(args.topic, num_partitions=1, replication_factor=1)],
                              operation_timeout=10, request_timeout=15)
    for fut in futures.values():
        fut.result(timeout=20)
    # wait until the topic's partition has a leader, so the first produce succeeds
    for _ in range(50):
        md = a.list_topics(topic=args.topic, timeout=3)
        t = md.topics.get(args.topic)
        if t is not None and t.error is None and t.partitions and all(p.leader >= 0 for p in t.partitions.values()):
            return 0
        import time
        time.sleep(0.2)
    print(f"topic {args.topic} has no leader", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
