"""
What one connection record costs, in Python, on its way from a --workers
worker to the supervisor's /records (twisted_echo/app/forwarded.py), without
processes, pipes or a load generator: the worker's side (its ring, the
record's text, the line of records written every 5 records), the
supervisor's (the line cut and each record kept in its ring) and the
/records answer (1,000 records written).

    taskset -c 1 python benchmarks/records_forwarding.py [--records 20000]

Prints microseconds per record for each side, best of 3 runs.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from twisted.internet.task import Clock

from twisted_echo.app.control import JsonLines, WorkerChannel, WorkerControl
from twisted_echo.app.forwarded import add_forwarded_records, record_item
from twisted_echo.records.record import ConnectionRecord
from twisted_echo.records.ring import RecordRing


class _Pipe:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


class _Worker:
    number = 1


def _record(n: int) -> ConnectionRecord:
    return ConnectionRecord(
        "echo",
        "tcp:127.0.0.1:7007",
        f"tcp:127.0.0.1:{10000 + n % 50000}",
        None,
        "tcp:127.0.0.1:7007",
        None,
        1765143000.123456 + n,
        0.000123,
        0.000234,
        0.001234,
        64,
        64,
        1,
        1,
        None,
        "client_fin",
    )


def once(count: int) -> tuple[float, float, float]:
    """
    @return: microseconds per record: worker, supervisor, answer.
    """
    records = [_record(n) for n in range(count)]
    channel = WorkerChannel({}, Clock())
    pipe = _Pipe()
    channel.transport = pipe  # type: ignore[assignment]
    worker_ring = RecordRing(1, Clock())
    worker_ring.observers[:] = [lambda r: channel.send_record(record_item(r))]
    start = time.perf_counter()
    for n, record in enumerate(records):
        worker_ring.add(record)
        if n % 5 == 4:
            channel.flush()
    channel.flush()
    worker = time.perf_counter() - start

    ring = RecordRing(2000, Clock())
    control = WorkerControl(Clock())
    control.records = lambda _, line: add_forwarded_records(ring, line)
    lines = JsonLines(
        lambda message: control.received(_Worker(), message),
        print,
        records=lambda line: control.received_records(_Worker(), line),
    )
    start = time.perf_counter()
    for data in pipe.written:
        lines.feed(data)
    supervisor = time.perf_counter() - start
    assert ring.last_id == count

    answers = 20
    start = time.perf_counter()
    for _ in range(answers):
        texts: Any = b", ".join(r.as_json() for r in ring.since(0, None, 1000))
    answer = (time.perf_counter() - start) / (answers * 1000)
    assert texts
    return worker / count * 1e6, supervisor / count * 1e6, answer * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20000)
    args = parser.parse_args()
    runs = [once(args.records) for _ in range(3)]
    worker, supervisor, answer = (min(r[i] for r in runs) for i in range(3))
    print(
        f"per record: worker {worker:.2f} µs, supervisor {supervisor:.2f} µs, "
        f"/records answer {answer:.2f} µs"
    )


if __name__ == "__main__":
    main()
