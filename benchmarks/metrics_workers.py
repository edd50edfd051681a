"""
Check --metrics with --workers 2 when both workers are killed (issue 19,
item 4), as the issue found it:

    python benchmarks/metrics_workers.py

 1. 40 echo and 10 welcome connections open; both workers get SIGKILL; the
    clients close; /metrics is read once the replacements are up:
    sockecho_connections_open and sockecho_held_bytes should be 0.
 2. On a fresh server, 112 short echo connections, then at once SIGKILL to
    both workers: sockecho_connections_total{service="echo"} should be 112.

Prints one line of JSON. Loopback only, bounded in count and time.

    python benchmarks/metrics_workers.py cost

times one counter change (`connections_total += 1`, `refused[...] += 1`) on
plain ServiceCounters and on a worker's SharedServiceCounters (best of 5 x
500,000, repeated 3 times).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
TWISTD = str(Path(sys.executable).parent / "twistd")


def start() -> tuple[subprocess.Popen[str], dict[str, int], list[str]]:
    args = [TWISTD, "-n", "--pidfile=", "sockecho", "--workers", "2"]
    for service in ("echo", "upper", "welcome", "metrics"):
        args += [f"--{service}", f"tcp:0:interface={HOST}"]
    args += ["--no-udp", "--max-per-peer", "0"]
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    assert process.stdout is not None
    threading.Thread(
        target=lambda: lines.extend(process.stdout),  # type: ignore[arg-type]
        daemon=True,
    ).start()
    wait_log(lines, r"worker 2 twisted_echo\.listening\.listen#info\] welcome "
        r"listening")
    ports = {}
    for line in lines:
        match = re.search(r"\] (\w+) listening on tcp:[\d.]+:(\d+)$", line)
        if match and "worker" not in line:
            ports[match.group(1)] = int(match.group(2))
    return process, ports, lines


def wait_log(lines: list[str], pattern: str, start: int = 0) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any(re.search(pattern, line) for line in lines[start:]):
            return
        time.sleep(0.05)
    raise RuntimeError(f"no log line {pattern!r}")


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = {}
    for line in text.splitlines():
        match = re.match(r'(sockecho_\w+)\{service="(\w+)"\} (\S+)$', line)
        if match:
            found[f"{match.group(1)}:{match.group(2)}"] = float(match.group(3))
    return found


def kill_workers(lines: list[str]) -> None:
    mark = len(lines)
    pids = [
        int(m) for m in re.findall(r"worker \d started \(pid (\d+)\)", "".join(lines))
    ]
    for pid in pids[-2:]:
        os.kill(pid, signal.SIGKILL)
    for number in (1, 2):
        wait_log(lines, rf"worker {number} was killed by signal 9", mark)
    for number in (1, 2):
        wait_log(
            lines,
            rf"worker {number} twisted_echo\.listening\.listen#info\] welcome "
                rf"listening",
            mark,
        )


def open_connections() -> dict[str, Any]:
    process, ports, lines = start()
    try:
        held = []
        for service, count in (("echo", 40), ("welcome", 10)):
            for _ in range(count):
                sock = socket.create_connection((HOST, ports[service]), 5)
                if service == "echo":
                    sock.sendall(b"x" * 1000)
                    sock.recv(1000)
                held.append(sock)
        deadline = time.monotonic() + 5
        while scrape(ports["metrics"]).get("sockecho_connections_open:echo") != 40:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        before = scrape(ports["metrics"])
        kill_workers(lines)
        for sock in held:
            sock.close()
        after = scrape(ports["metrics"])
        keys = ["connections_open", "held_bytes", "connections_total"]
        return {
            f"{when}:{key}:{service}": figures.get(f"sockecho_{key}:{service}")
            for when, figures in (("before", before), ("after", after))
            for key in keys
            for service in ("echo", "welcome")
        }
    finally:
        process.kill()
        process.wait(10)


def finished_connections(count: int = 112) -> dict[str, Any]:
    process, ports, lines = start()
    try:
        for i in range(count):
            with socket.create_connection((HOST, ports["echo"]), 5) as sock:
                sock.sendall(b"%03d" % i)
                sock.recv(3)
        kill_workers(lines)
        found = scrape(ports["metrics"])
        return {
            "finished_connections": count,
            "connections_total:echo": found.get("sockecho_connections_total:echo"),
            "received_bytes_total:echo": found.get(
                "sockecho_received_bytes_total:echo"
            ),
        }
    finally:
        process.kill()
        process.wait(10)


def cost() -> dict[str, Any]:
    import timeit

    from twisted_echo.operations.sharedcounters import (
        CounterTable,
        SharedServiceCounters,
    )
    from twisted_echo.policies.counters import ServiceCounters

    table, fd = CounterTable.create()
    os.close(fd)
    names = {"plain": ServiceCounters(), "shared": SharedServiceCounters(table, "echo")}
    found: dict[str, Any] = {}
    for name, counters in names.items():
        for label, statement in (
            ("field_ns", "c.connections_total += 1"),
            ("reason_ns", 'c.refused["max_per_peer"] += 1'),
        ):
            runs = [
                min(timeit.repeat(statement, globals={"c": counters}, number=500_000))
                / 500_000
                * 1e9
                for _ in range(3)
            ]
            found[f"{name}_{label}"] = [round(r) for r in runs]
    return found


if __name__ == "__main__":
    if sys.argv[1:] == ["cost"]:
        print(json.dumps(cost()))
    else:
        print(json.dumps({**open_connections(), **finished_connections()}))
