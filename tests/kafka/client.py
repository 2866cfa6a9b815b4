"""A real Kafka client (kafka-python) for the stream tests and scripts/bench-stream.

  client.py BROKER create TOPIC [TOPIC ...] --partitions N
  client.py BROKER produce TOPIC --count N [--bad EVERY] [--start S] [--rate R]
      N iris records {"sepal_length": …} keyed k<i>; with --bad, every EVERY-th one is not JSON;
      --rate paces them (records a second). Prints {"produced": N, "seconds": …}.
  client.py BROKER throughput IN OUT --count N [--rate R]
      Produces N records at R a second (0: flat out) while reading their results: records a
      second end to end, latency percentiles (send to result received). For scripts/bench-stream.
  client.py BROKER consume TOPIC --count N [--timeout S] [--group G]
      Reads until N records arrived (or the timeout), prints a summary as JSON: the count, the
      distinct keys, the prediction ids, the headers of dead letters, and for results the
      end-to-end latency of each (from the timestamp the producer gave the input record).

A broker that wants TLS or SASL: KAFKA_SECURITY holds kafka-python's settings as JSON.
"""

import argparse
import json
import os
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

# kafka-python's settings for a broker that wants TLS or SASL, as JSON in KAFKA_SECURITY
# ({"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256", ...}).
SECURITY = json.loads(os.environ.get("KAFKA_SECURITY") or "null") or {}

ROWS = [
    {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
    {"sepal_length": 6.2, "sepal_width": 2.9, "petal_length": 4.3, "petal_width": 1.3},
    {"sepal_length": 7.7, "sepal_width": 2.6, "petal_length": 6.9, "petal_width": 2.3},
]


def create(args):
    # A broker just started may not answer yet (one on S3 waits for its store).
    deadline = time.time() + 90
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=args.broker, **SECURITY, request_timeout_ms=10000)
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    for topic in args.topics:
        try:
            admin.create_topics([NewTopic(topic, num_partitions=args.partitions, replication_factor=1)])
        except TopicAlreadyExistsError:
            pass
    admin.close()
    print(json.dumps({"created": args.topics}))


def produce(args):
    producer = KafkaProducer(bootstrap_servers=args.broker, **SECURITY, linger_ms=5, acks="all",
                             retries=10, max_in_flight_requests_per_connection=1)
    started = time.time()
    sent = []
    for i in range(args.start, args.start + args.count):
        if args.bad and i % args.bad == 0:
            value = b"{not json"
        else:
            value = json.dumps(ROWS[i % len(ROWS)]).encode()
        sent.append(producer.send(args.topic, key=f"k{i}".encode(), value=value,
                                  headers=[("trace", f"t{i}".encode())]))
        if args.rate:
            ahead = (i - args.start + 1) / args.rate - (time.time() - started)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush(timeout=120)
    # Every record acknowledged by the broker, or the failures counted.
    failed = 0
    for future in sent:
        try:
            future.get(timeout=60)
        except Exception as e:  # noqa: BLE001 - reported, counted
            failed += 1
            if failed <= 3:
                print(f"not produced: {e!r}", file=sys.stderr)
    print(json.dumps({"produced": args.count - failed, "failed": failed,
                      "seconds": time.time() - started}))


def consume(args):
    consumer = KafkaConsumer(args.topic, bootstrap_servers=args.broker, **SECURITY, group_id=args.group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=1000)
    keys, ids, errors, latencies, count = set(), [], [], [], 0
    versions = {}
    deadline = time.time() + args.timeout
    # Results are written at least once (a record read again after a crash is answered again),
    # so reading stops at COUNT distinct keys, not at COUNT messages.
    while len(keys) < args.count and time.time() < deadline:
        for m in consumer:
            count += 1
            keys.add(m.key.decode() if m.key else None)
            headers = dict(m.headers or [])
            if b"plinth-error" in {k.encode() if isinstance(k, str) else k for k in headers}:
                errors.append({"key": m.key.decode() if m.key else None,
                               "reason": (headers.get("plinth-error") or b"").decode(),
                               "trace": (headers.get("trace") or b"").decode()})
            else:
                body = json.loads(m.value)
                if "prediction_id" in body:
                    ids.append(body["prediction_id"])
                versions[body.get("version")] = versions.get(body.get("version"), 0) + 1
                latencies.append(m.timestamp)
            if len(keys) >= args.count:
                break
    consumer.close()
    print(json.dumps({"count": count, "keys": len(keys), "ids": len(ids), "distinct_ids": len(set(ids)),
                      "dead": errors[:20], "dead_count": len(errors),
                      "versions": {str(k): v for k, v in versions.items()},
                      "last_timestamp_ms": max(latencies) if latencies else None}))


def throughput(args):
    """Produces COUNT records at RATE a second (0: as fast as it can) while reading the results:
    records a second end to end and each record's latency (send to result received)."""
    import threading
    consumer = KafkaConsumer(args.output, bootstrap_servers=args.broker, **SECURITY,
                             group_id=f"plinth-bench-{time.time()}", auto_offset_reset="latest",
                             enable_auto_commit=False, fetch_max_wait_ms=args.fetch_wait_ms)
    # Joined and positioned before anything is produced.
    while not consumer.assignment():
        consumer.poll(timeout_ms=200)
    for tp in consumer.assignment():
        consumer.seek_to_end(tp)
        consumer.position(tp)
    sent = {}
    producer = KafkaProducer(bootstrap_servers=args.broker, **SECURITY, linger_ms=2, acks=1)
    tag = f"b{int(time.time() * 1000)}-"
    def send():
        started = time.time()
        for i in range(args.count):
            key = f"{tag}{i}"
            sent[key] = time.time()
            producer.send(args.input, key=key.encode(), value=json.dumps(ROWS[i % 3]).encode())
            if args.rate:
                ahead = (i + 1) / args.rate - (time.time() - started)
                if ahead > 0:
                    time.sleep(ahead)
            elif i % 1000 == 0:
                producer.flush()
        producer.flush()
    first = time.time()
    t = threading.Thread(target=send)
    t.start()
    latencies = []
    deadline = time.time() + args.timeout
    last = first
    while len(latencies) < args.count and time.time() < deadline:
        for _, msgs in consumer.poll(timeout_ms=500, max_records=5000).items():
            now = time.time()
            for m in msgs:
                key = m.key.decode() if m.key else ""
                if key in sent:
                    latencies.append(now - sent.pop(key))
                    last = now
    t.join()
    consumer.close()
    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else None
    print(json.dumps({"records": len(latencies), "seconds": last - first,
                      "per_second": len(latencies) / max(last - first, 1e-9),
                      "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("broker")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("topics", nargs="+")
    c.add_argument("--partitions", type=int, default=3)
    p = sub.add_parser("produce")
    p.add_argument("topic")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--bad", type=int, default=0)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--rate", type=float, default=0)
    r = sub.add_parser("consume")
    r.add_argument("topic")
    r.add_argument("--count", type=int, required=True)
    r.add_argument("--timeout", type=float, default=120)
    r.add_argument("--group", default="plinth-test-reader")
    t = sub.add_parser("throughput")
    t.add_argument("input")
    t.add_argument("output")
    t.add_argument("--count", type=int, required=True)
    t.add_argument("--rate", type=float, default=0)
    t.add_argument("--timeout", type=float, default=300)
    t.add_argument("--fetch-wait-ms", type=int, default=500)
    args = ap.parse_args()
    {"create": create, "produce": produce, "consume": consume,
     "throughput": throughput}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
