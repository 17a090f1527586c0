"""What a user would do without weir, for `weir bench`: append the same
rows to a Delta table in micro-batches with the `deltalake` package, at a
given freshness (one second by default).

The micro-batch is the largest that one append writes within the
freshness (rows halve while an append takes longer, then double while it
takes under 0.8 of it, up to about 1 GB); the producers are taken to be infinitely fast, so a row
waits for the append in progress and then its own: its freshness is at
most two appends. Prints one JSON object.

    python bench_deltalake.py --rows rows.arrow --table DIR --duration 10 --bytes-per-row 1200 --freshness 1
"""

import argparse
import json
import time

import pyarrow as pa
import pyarrow.ipc as ipc
from deltalake import write_deltalake


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", required=True, help="an Arrow IPC file of rows to append")
    parser.add_argument("--table", required=True, help="where the Delta table goes")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--bytes-per-row", type=float, required=True)
    parser.add_argument("--freshness", type=float, default=1.0, help="seconds")
    args = parser.parse_args()

    rows = ipc.open_file(args.rows).read_all()

    def batch(size):
        copies = -(-size // rows.num_rows)
        return pa.concat_tables([rows] * copies).slice(0, size).combine_chunks()

    def append(table):
        started = time.monotonic()
        write_deltalake(args.table, table, mode="append")
        return time.monotonic() - started

    size = min(rows.num_rows, 10_000)
    took = append(batch(size))
    # Halve while an append takes longer than the freshness allows...
    while took > args.freshness and size > 100:
        size //= 2
        took = append(batch(size))
    # ...or double while it takes under 0.8 of it (at most about 1 GB, in
    # memory), keeping the last size within the freshness.
    while took < 0.8 * args.freshness and size * args.bytes_per_row < 1e9:
        took = append(batch(size * 2))
        if took > args.freshness:
            break
        size *= 2
    micro = batch(size)
    appends = []
    written = 0
    started = time.monotonic()
    while time.monotonic() - started < args.duration:
        appends.append(append(micro))
        written += size
    elapsed = time.monotonic() - started
    appends.sort()
    p50 = appends[len(appends) // 2]
    p99 = appends[min(len(appends) - 1, round(0.99 * (len(appends) - 1)))]
    print(
        json.dumps(
            {
                "target": "deltalake",
                "freshness_target_s": args.freshness,
                "rows_per_append": size,
                "appends": len(appends),
                "rows_per_s": written / elapsed,
                "mb_per_s": written * args.bytes_per_row / elapsed / 1e6,
                "append_s": {"p50": p50, "p99": p99},
                "freshness_s_at_most": 2 * appends[-1],
            }
        )
    )


if __name__ == "__main__":
    main()
