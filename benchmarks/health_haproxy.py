"""
Measure readiness switched at run time behind a real HAProxy (issue 21,
`PUT /health` with --admin): how long HAProxy takes to mark a sockecho
DOWN after `{"readyz": "fail"}` and UP again after `{"readyz": "pass"}`,
and how many client exchanges fail meanwhile.

    taskset -c 0 python benchmarks/health_haproxy.py [--runs 3] [--fall 2]

Each run starts two `twistd -n sockecho --admin` (echo behind `haproxy:`,
--metrics) on free loopback ports and HAProxy from
contrib/haproxy/sockecho-readyz.cfg (inter 200 ms, fall 2 or --fall N,
rise 1), loops echo exchanges through HAProxy in two threads, switches the
first sockecho's /readyz to fail, waits for HAProxy's "is DOWN" line,
switches it back and waits for "is UP". Reported: milliseconds from the
PUT's answer to each line (the bar: inter x fall, plus one check's time),
exchanges passed and failed. Bounded: at most 100,000 exchanges per
thread, each with a 5 s timeout; every wait has a 15 s deadline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.drain_delay_haproxy import (  # noqa: E402
    HOST,
    TWISTD,
    ExchangeLoops,
    Process,
    start_balancer,
)
from tests.test_haproxy import CHECK_FALL  # noqa: E402


def backend() -> tuple[Process, int, int]:
    server = Process(
        [TWISTD, "-n", "--pidfile=", "sockecho", "--echo",
         f"haproxy:tcp:0:interface={HOST}", "--no-upper", "--no-welcome",
         "--no-udp", "--metrics", f"tcp:0:interface={HOST}", "--admin"]
    )  # fmt: skip
    _, echo = server.wait_for(r"\] echo listening on tcp:127\.0\.0\.1:(\d+)")
    _, metrics = server.wait_for(r"\] metrics listening on tcp:127\.0\.0\.1:(\d+)")
    return server, int(echo.group(1)), int(metrics.group(1))


def put(metrics: int, readyz: str) -> float:
    """
    @return: the monotonic time the answer came.
    """
    request = urllib.request.Request(
        f"http://{HOST}:{metrics}/health",
        data=json.dumps({"readyz": readyz}).encode(),
        method="PUT",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()
    return time.monotonic()


def run(fall: int) -> tuple[float, float, int, int]:
    switched, echo1, metrics1 = backend()
    other, echo2, metrics2 = backend()
    balancer = None
    try:
        balancer, front = start_balancer([(echo1, metrics1), (echo2, metrics2)], fall)
        loops = ExchangeLoops(front)
        time.sleep(1)
        failed_at = put(metrics1, "fail")
        down_at, _ = balancer.wait_for(r"Server echo/sockecho1 is DOWN")
        time.sleep(0.5)
        passed_at = put(metrics1, "pass")
        up_at, _ = balancer.wait_for(r"Server echo/sockecho1 is UP")
        time.sleep(0.5)
        passed, failed = loops.stop()
        return down_at - failed_at, up_at - passed_at, passed, failed
    finally:
        for process in (balancer, switched, other):
            if process is not None:
                process.kill()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fall", type=int, default=CHECK_FALL)
    args = parser.parse_args()
    print(f"HAProxy inter 200 ms, fall {args.fall}, rise 1")
    print("| run | PUT fail to DOWN | PUT pass to UP | exchanges passed | failed |")
    print("|---|---|---|---|---|")
    for number in range(1, args.runs + 1):
        down, up, passed, failed = run(args.fall)
        print(f"| {number} | {down * 1000:.0f} ms | {up * 1000:.0f} ms | "
              f"{passed} | {failed} |")  # fmt: skip


if __name__ == "__main__":
    main()
