#!/usr/bin/env python3
"""The Python peer of a Plinth stream, for scripts/bench-stream: what a team would write around
onnxruntime to score a Kafka topic and keep what it scored, like the Django recipe keeps each
prediction.

One consumer of a group (kafka-python, manual commits): each poll's records are parsed, scored in
one onnxruntime call, their results produced to the output topic with the input's key (and
acknowledged), the predictions copied into Postgres in one transaction (psycopg COPY, unique on
topic/partition/offset), and only then the offsets committed. Run one per core, as the peers are.

Usage: stream_peer.py BROKER INPUT OUTPUT MODEL DSN [--group G] [--fetch-wait-ms MS]
"""

import argparse
import json
import sys

import numpy as np
import onnxruntime as ort
import psycopg
from kafka import KafkaConsumer, KafkaProducer

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
TABLE = """create table if not exists peer_prediction (
    id bigserial primary key,
    topic text not null, partition int not null, "offset" bigint not null,
    key text, inputs real[] not null, label text not null, proba real[] not null,
    created_at timestamptz not null default now(),
    unique (topic, partition, "offset"))"""


def main():
    ap = argparse.ArgumentParser()
    for name in ("broker", "input", "output", "model", "dsn"):
        ap.add_argument(name)
    ap.add_argument("--group", default="python-peer")
    ap.add_argument("--fetch-wait-ms", type=int, default=500)
    args = ap.parse_args()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    db = psycopg.connect(args.dsn)
    with db.transaction():
        # One process a core starts at once: one of them creates the table.
        db.execute("select pg_advisory_xact_lock(4242)")
        db.execute(TABLE)
    consumer = KafkaConsumer(args.input, bootstrap_servers=args.broker, group_id=args.group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             fetch_max_wait_ms=args.fetch_wait_ms)
    producer = KafkaProducer(bootstrap_servers=args.broker, linger_ms=2, acks=1)
    print("ready", file=sys.stderr, flush=True)
    while True:
        polled = consumer.poll(timeout_ms=500, max_records=2000)
        records = [m for msgs in polled.values() for m in msgs]
        if not records:
            continue
        rows = [[float(json.loads(m.value)[f]) for f in FEATURES] for m in records]
        x = np.asarray(rows, dtype=np.float32)
        labels, probas = session.run(None, {input_name: x})
        futures, stored = [], []
        for m, row, label, proba in zip(records, rows, labels, probas):
            probs = {str(k): float(v) for k, v in proba.items()} if isinstance(proba, dict) \
                else {str(i): float(v) for i, v in enumerate(proba)}
            body = {"label": str(label), "probabilities": probs,
                    "source": {"topic": m.topic, "partition": m.partition, "offset": m.offset}}
            futures.append(producer.send(args.output, key=m.key, value=json.dumps(body).encode()))
            stored.append((m.topic, m.partition, m.offset, m.key.decode() if m.key else None,
                           row, str(label), list(probs.values())))
        producer.flush()
        for f in futures:
            f.get(timeout=60)
        with db.transaction():
            with db.cursor().copy('copy peer_prediction (topic, partition, "offset", key, inputs, '
                                  "label, proba) from stdin") as copy:
                for r in stored:
                    copy.write_row(r)
        consumer.commit()


if __name__ == "__main__":
    main()
