"""
Measure a rolling stop behind a real HAProxy (issue 21, --drain-delay): how
long HAProxy takes to mark a sockecho down after its SIGTERM, and how many
client exchanges fail meanwhile.

    taskset -c 0 python benchmarks/drain_delay_haproxy.py [--drain-delay 5] [--runs 3]

Each run starts two `twistd -n sockecho` (echo behind `haproxy:`, --metrics)
on free loopback ports and HAProxy from contrib/haproxy/sockecho-readyz.cfg
(inter 200 ms, fall 2 or --fall N, rise 1), loops echo exchanges through HAProxy in two
threads, sends SIGTERM to the first sockecho and reports: seconds from the
signal to HAProxy's "is DOWN" line, exchanges passed and failed until the
process has exited, and the exchanges it served after the signal. Bounded:
at most 100,000 exchanges per thread, each with a 5 s timeout, and the
run ends once the stopped process has exited.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.test_haproxy import CHECK_FALL, readyz_config  # noqa: E402

HOST = "127.0.0.1"
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Process:
    """A child whose output lines are read (with their arrival time) by a thread."""

    def __init__(self, command: list[str]) -> None:
        self.lines: list[tuple[float, str]] = []
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=tempfile.mkdtemp(prefix="sockecho-bench-"),
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.append((time.monotonic(), raw.decode("utf-8", "replace")))

    def wait_for(
        self, pattern: str, timeout: float = 15
    ) -> tuple[float, re.Match[str]]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, line in list(self.lines):
                match = regex.search(line)
                if match:
                    return at, match
            time.sleep(0.01)
        raise SystemExit(f"no line matching {pattern!r}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def backend(delay: float) -> tuple[Process, int, int]:
    server = Process(
        [TWISTD, "-n", "--pidfile=", "sockecho", "--echo",
         f"haproxy:tcp:0:interface={HOST}", "--no-upper", "--no-welcome",
         "--no-udp", "--metrics", f"tcp:0:interface={HOST}",
         "--drain-delay", str(delay)]
    )  # fmt: skip
    _, echo = server.wait_for(r"\] echo listening on tcp:127\.0\.0\.1:(\d+)")
    _, metrics = server.wait_for(r"\] metrics listening on tcp:127\.0\.0\.1:(\d+)")
    return server, int(echo.group(1)), int(metrics.group(1))


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
        return got



class ExchangeLoops:
    """
    Echo exchanges through C{front} in two threads until L{stop}: each
    thread at most 100,000 exchanges, each with a 5 s timeout.

    @ivar passed: exchanges answered intact.
    @ivar failed: exchanges that failed or came back wrong.
    """

    def __init__(self, front: int) -> None:
        self.front = front
        self.passed = [0, 0]
        self.failed = [0, 0]
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(i,)) for i in range(2)
        ]
        for thread in self._threads:
            thread.start()

    def _loop(self, index: int) -> None:
        for i in range(100_000):
            if self._stop.is_set():
                return
            data = b"probe %d" % i
            try:
                ok = exchange(self.front, data) == data
            except OSError:
                ok = False
            if ok:
                self.passed[index] += 1
            else:
                self.failed[index] += 1

    def stop(self) -> tuple[int, int]:
        """
        Stop the threads (waiting at most 30 s for each).

        @return: exchanges passed and failed, over both threads.
        """
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return sum(self.passed), sum(self.failed)


def start_balancer(
    backends: list[tuple[int, int]], fall: int
) -> tuple[Process, int]:
    """
    HAProxy in front of C{backends} (echo port, metrics port), checking
    C{/readyz} with C{fall}; returned once an echo exchange passes through
    it (at most 10 s), with its front port. Kill the process when done.
    """
    front = free_port()
    config = os.path.join(tempfile.mkdtemp(prefix="sockecho-bench-"), "h.cfg")
    text = readyz_config(front, backends)
    Path(config).write_text(text.replace(f"fall {CHECK_FALL} ", f"fall {fall} "))
    balancer = Process(["haproxy", "-f", config, "-db"])
    deadline = time.monotonic() + 10
    while True:
        try:
            exchange(front, b"up?")
            return balancer, front
        except OSError:
            if time.monotonic() > deadline:
                balancer.kill()
                raise SystemExit("haproxy did not start") from None
            time.sleep(0.05)

def run(delay: float, fall: int) -> tuple[float, int, int, int]:
    leaving, echo1, metrics1 = backend(delay)
    staying, echo2, metrics2 = backend(delay)
    balancer = None
    try:
        balancer, front = start_balancer([(echo1, metrics1), (echo2, metrics2)], fall)
        loops = ExchangeLoops(front)
        time.sleep(1)
        served = re.compile(r"echo connection from .* closed: \d+ bytes in")
        signalled = time.monotonic()
        leaving.process.send_signal(signal.SIGTERM)
        down_at, _ = balancer.wait_for(r"Server echo/sockecho1 is DOWN")
        leaving.process.wait(delay + 20)
        time.sleep(0.5)
        passed, failed = loops.stop()
        after = sum(
            1 for at, line in leaving.lines if at > signalled and served.search(line)
        )
        return down_at - signalled, passed, failed, after
    finally:
        for process in (balancer, leaving, staying):
            if process is not None:
                process.kill()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--drain-delay", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fall", type=int, default=CHECK_FALL)
    args = parser.parse_args()
    print(f"HAProxy inter 200 ms, fall {args.fall}")
    print("| run | --drain-delay | SIGTERM to HAProxy DOWN | exchanges passed "
          "| failed | served by the stopped one after SIGTERM |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for number in range(1, args.runs + 1):
        down, passed, failed, after = run(args.drain_delay, args.fall)
        print(f"| {number} | {args.drain_delay:g} s | {down * 1000:.0f} ms | "
              f"{passed} | {failed} | {after} |")  # fmt: skip


if __name__ == "__main__":
    main()
