#!/usr/bin/env python3
"""
Issue 21's timing figures for the fault engine, measured on loopback
against a real `twistd sockecho --faults ...` (not unit-tested: wall-clock).

    taskset -c 1 python benchmarks/faults_figures.py [--json]

- latency=200ms: 100 round trips of 100 bytes; every one 200 ms +- 20 ms.
- latency=200ms,jitter=20ms: 100 round trips; each within 180-220 ms
  (counted as is, and with 1 ms more for loopback and reactor time, which
  a round trip adds to the server's hold: the median overhead of the
  latency-only run is its median minus 200 ms).
- bandwidth=100KB/s: a 1 MB echo; the rate the client receives at, from
  its first reply byte to its last (bar: 90-110 KB/s, KB = 1000 bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HOST = "127.0.0.1"
TWISTD = str(Path(sys.executable).parent / "twistd")


@contextmanager
def server(profile: str) -> Iterator[int]:
    """
    A twistd with echo alone, on a free port, with C{--faults echo=PROFILE}.

    @return: the echo port.
    """
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [
            TWISTD,
            "-n",
            "--pidfile=",
            "sockecho",
            "--echo",
            f"tcp:0:interface={HOST}",
            "--no-upper",
            "--no-welcome",
            "--no-udp",
            "--faults",
            f"echo={profile}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tempfile.gettempdir(),
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            found = re.search(
                r"echo listening on tcp:127\.0\.0\.1:(\d+)", Path(log.name).read_text()
            )
            if found:
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"server did not start:\n{Path(log.name).read_text()}")
            time.sleep(0.05)
        yield int(found.group(1))
    finally:
        proc.terminate()
        proc.wait(30)
        os.unlink(log.name)


def round_trips(port: int, count: int = 100, size: int = 100) -> list[float]:
    """
    @return: the seconds of each of C{count} round trips of C{size} bytes
        on one connection.
    """
    times = []
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        payload = b"r" * size
        for _ in range(count):
            started = time.perf_counter()
            sock.sendall(payload)
            got = 0
            while got < size:
                data = sock.recv(65536)
                if not data:
                    raise SystemExit("server closed")
                got += len(data)
            times.append(time.perf_counter() - started)
    return times


def transfer_rate(port: int, total: int = 1_000_000) -> dict[str, float]:
    """
    Send C{total} bytes (then half-close) and read the echo.

    @return: bytes/s from the first reply byte to the last, and in all.
    """
    with socket.create_connection((HOST, port), timeout=60) as sock:
        sock.setblocking(True)
        started = time.perf_counter()
        sent = 0
        first = last = None
        got = 0
        chunk = b"b" * 65536
        sock.setblocking(False)
        while got < total:
            if sent < total:
                try:
                    sent += sock.send(chunk[: total - sent])
                except BlockingIOError:
                    pass
                if sent == total:
                    sock.shutdown(socket.SHUT_WR)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            if not data:
                break
            now = time.perf_counter()
            first = first or now
            last = now
            got += len(data)
    assert first is not None and last is not None
    return {
        "bytes": got,
        "seconds": last - started,
        "rate_first_to_last": got / (last - first),
        "rate_overall": got / (last - started),
    }


def summary(times: list[float], low: float, high: float) -> dict[str, float]:
    """
    @param low: milliseconds, the bar's bottom.
    @param high: milliseconds, the bar's top.
    """
    in_order = [t * 1000 for t in times]
    ms = sorted(in_order)
    return {
        "count": len(ms),
        "within_bar": sum(low <= t <= high for t in ms),
        # a round trip adds loopback and reactor time to the server's hold
        "within_bar_plus_1ms": sum(low <= t <= high + 1 for t in ms),
        "slowest_at": in_order.index(ms[-1]),
        "min_ms": round(ms[0], 2),
        "median_ms": round(statistics.median(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "max_ms": round(ms[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures: dict[str, dict[str, float]] = {}
    with server("latency=200ms") as port:
        figures["latency=200ms"] = summary(round_trips(port), 180, 220)
    with server("latency=200ms,jitter=20ms;seed=42") as port:
        figures["latency=200ms,jitter=20ms"] = summary(round_trips(port), 180, 220)
    with server("bandwidth=100KB/s") as port:
        rate = transfer_rate(port)
        figures["bandwidth=100KB/s"] = {
            "bytes": rate["bytes"],
            "seconds": round(rate["seconds"], 3),
            "KB_per_s_first_to_last": round(rate["rate_first_to_last"] / 1000, 1),
            "KB_per_s_overall": round(rate["rate_overall"] / 1000, 1),
        }
    if args.json:
        print(json.dumps(figures, indent=1))
        return
    for name, values in figures.items():
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


if __name__ == "__main__":
    main()
