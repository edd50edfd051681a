"""
Issue 22's long-poll figure: how soon after a connection closes a test
waiting on `/records?wait=` gets its record, against a real
`twistd -n sockecho` (start_sockecho, with its `--metrics` listener).

Each round: a waiting request (`GET /records?since=LAST&wait=10`, on a
kept-alive HTTP connection) is sent and given time to arrive; then a client
connects to echo, sends 4 bytes, half-closes, reads the echo and the
server's close; the time from that close (EOF read by the client: the
server's close, so the record is made) to the long-poll's answer is the
latency. Prints the median, 90th percentile and maximum over the rounds.

    python benchmarks/records_latency.py               # 200 rounds, ~30 s
    python benchmarks/records_latency.py --rounds 50
    python benchmarks/records_latency.py --workers 2   # the supervisor's ring

With `--workers N` the record travels from the worker that served the
connection to the supervisor over the control channel
(twisted_echo/app/control.py) before the supervisor's `/records` answers.

Everything stays on 127.0.0.1 and is bounded (rounds, and 10 s per wait).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import threading
import time

from twisted_echo.testing.spawn import start_sockecho


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    latencies: list[float] = []
    options = ["--log-level", "warn"]
    if args.workers > 1:
        options += ["--workers", str(args.workers)]
    with start_sockecho(*options) as server:
        host, port = server.address("metrics")
        http_connection = http.client.HTTPConnection(host, port, timeout=15)
        last = server.records_view._get(limit=0)["last_id"]
        for _ in range(args.rounds):
            answer: dict[str, object] = {}

            def wait(since: int = last, answer: dict[str, object] = answer) -> None:
                http_connection.request("GET", f"/records?since={since}&wait=10")
                response = http_connection.getresponse()
                body = json.loads(response.read())
                answer["at"] = time.perf_counter()
                answer["body"] = body

            waiter = threading.Thread(target=wait)
            waiter.start()
            # Let the request reach the server and start waiting: the
            # latency measured is the close-to-answer time, not this.
            time.sleep(0.02)
            with socket.create_connection(server.echo, timeout=10) as sock:
                sock.sendall(b"ping")
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(100):
                    pass
                closed = time.perf_counter()
            waiter.join(15)
            body = answer["body"]
            assert isinstance(body, dict) and body["records"], body
            last = body["last_id"]
            latencies.append(float(answer["at"]) - closed)  # type: ignore[arg-type]
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    print(
        f"{len(ms)} rounds, --workers {args.workers}: long-poll answer after "
        "the close: "
        f"median {statistics.median(ms):.2f} ms, "
        f"p90 {ms[int(len(ms) * 0.9) - 1]:.2f} ms, max {ms[-1]:.2f} ms"
    )


if __name__ == "__main__":
    main()
