"""Ack latency over loopback, as a pyarrow producer sees it.

Creates table `lat` through `weir sql`, then opens one DoPut stream and
sends N batches of 100 rows, each awaited to its durable ack before the
next. Prints p50, p99, p99.9, the maximum and how many acks took over 20 ms.

    .venv/bin/python scripts/ack_latency.py target/debug/weir 127.0.0.1:50051 2000
"""

import json
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.flight as flight

weir, addr, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
subprocess.run(
    [weir, "sql", "--server", f"http://{addr}", "-c", "CREATE TABLE lat (id BIGINT NOT NULL)"],
    check=True,
    capture_output=True,
)
client = flight.FlightClient(f"grpc://{addr}")
batch = pa.record_batch({"id": pa.array(range(100), pa.int64())})
writer, reader = client.do_put(flight.FlightDescriptor.for_path("lat"), batch.schema)
reader.read()  # the ready ack
latencies = []
for offset in range(n):
    started = time.perf_counter()
    writer.write_with_metadata(batch, json.dumps({"offset_id": offset}).encode())
    reader.read()
    latencies.append((time.perf_counter() - started) * 1000)
writer.done_writing()
writer.close()
latencies.sort()


def at(q):
    return latencies[min(len(latencies) - 1, int(len(latencies) * q))]


print(
    f"p50 {at(0.5):.2f} ms  p99 {at(0.99):.2f} ms  p99.9 {at(0.999):.2f} ms  "
    f"max {latencies[-1]:.2f} ms  over 20 ms: {sum(l > 20 for l in latencies)}"
)
