"""
Issue 22's bound: many short connections leave the records' ring at its
bound (`--records`) and the server's memory flat, against a real
`twistd -n sockecho` (start_sockecho, `--log-level warn`).

Opens COUNT short echo connections (send 4 bytes, half-close, read the
echo) from THREADS threads; prints the server's resident memory
(VmRSS) after the first 10 % and at the end, the number of the last
record, and how many records `/records` holds.

    python benchmarks/records_ring.py                  # 100,000 connections
    python benchmarks/records_ring.py --count 20000 --records 500

Everything stays on 127.0.0.1 and is bounded by COUNT.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time

from twisted_echo.testing.spawn import start_sockecho


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise LookupError("VmRSS")


def connections(address: tuple[str, int], count: int) -> None:
    for _ in range(count):
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(b"ping")
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(100):
                pass


def run(address: tuple[str, int], count: int, threads: int) -> None:
    workers = [
        threading.Thread(target=connections, args=(address, count // threads))
        for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    with start_sockecho(
        "--log-level", "warn", "--records", str(args.records)
    ) as server:
        started = time.monotonic()
        run(server.echo, args.count // 10, args.threads)
        warm = rss_kib(server.pid)
        run(server.echo, args.count - args.count // 10, args.threads)
        took = time.monotonic() - started
        end = rss_kib(server.pid)
        view = server.records_view
        last = view._get(limit=0)["last_id"]
        held = len(view._get(limit=5000)["records"])
    print(
        f"{args.count} connections in {took:.1f} s: last record {last}, "
        f"{held} held (--records {args.records}); server RSS "
        f"{warm / 1024:.1f} MiB after {args.count // 10}, "
        f"{end / 1024:.1f} MiB at the end"
    )


if __name__ == "__main__":
    main()
