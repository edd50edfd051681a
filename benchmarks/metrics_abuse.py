"""
Measure the --metrics listener's bounds (issue 19, item 2): server memory
growth and a normal echo client's round trips while one client misbehaves
towards the metrics listener.

    python benchmarks/metrics_abuse.py pipeline
        # 42,500 pipelined GET /metrics, never read
    python benchmarks/metrics_abuse.py idle
        # 450 idle metrics connections, prlimit --nofile=456, --max-connections 200

Each run starts a fresh `twistd -n sockecho` on free loopback ports (as
benchmarks/abuse.py does) and prints one line of JSON. Bounded in count and
time, 127.0.0.1 only.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from abuse import (  # noqa: E402
    HOST,
    TWISTD,
    cpu_seconds,
    normal_client,
    p99_ms,
    read_ports,
    rss_kib,
)

REQUEST = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


def start(
    prefix: list[str], *options: str
) -> tuple[subprocess.Popen[str], dict[str, int]]:
    args = [*prefix, TWISTD, "-n", "--pidfile=", "sockecho"]
    for service in ("echo", "upper", "welcome"):
        args += [f"--{service}", f"tcp:0:interface={HOST}"]
    args += ["--no-udp", "--metrics", f"tcp:0:interface={HOST}", *options]
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    ports = read_ports(process, 4)
    lines: list[str] = []
    threading.Thread(
        target=lambda: lines.extend(process.stdout),
        daemon=True,  # type: ignore[arg-type]
    ).start()
    process.log = lines  # type: ignore[attr-defined]
    return process, ports


def pipeline(count: int = 42_500) -> dict[str, Any]:
    process, ports = start([])
    try:
        time.sleep(0.5)
        before = rss_kib(process.pid)
        cpu_before = cpu_seconds(process.pid)
        sock = socket.create_connection((HOST, ports["metrics"]))
        sock.setblocking(False)
        payload = REQUEST * count
        sent = 0
        stop = threading.Event()
        peak = [before]

        def push() -> None:
            nonlocal sent
            end = time.monotonic() + 8
            while sent < len(payload) and time.monotonic() < end and not stop.is_set():
                try:
                    sent += sock.send(payload[sent : sent + 65536])
                except BlockingIOError:
                    time.sleep(0.01)
                peak[0] = max(peak[0], rss_kib(process.pid))

        pusher = threading.Thread(target=push, daemon=True)
        pusher.start()
        times = normal_client(ports["echo"], 6.0)
        stop.set()
        pusher.join(10)
        peak[0] = max(peak[0], rss_kib(process.pid))
        sock.close()
        time.sleep(1)
        return {
            "scenario": f"{count} pipelined GET /metrics, never read",
            "requests_sent_bytes": sent,
            "requests_total_bytes": len(payload),
            "rss_before_mib": round(before / 1024, 1),
            "rss_growth_peak_mib": round((peak[0] - before) / 1024, 1),
            "rss_after_mib": round(rss_kib(process.pid) / 1024, 1),
            "server_cpu_s": round(cpu_seconds(process.pid) - cpu_before, 2),
            "echo_round_trips": len(times),
            "echo_p99_ms": p99_ms(times),
        }
    finally:
        process.kill()
        process.wait(10)


def idle(count: int = 450) -> dict[str, Any]:
    process, ports = start(["prlimit", "--nofile=456"], "--max-connections", "200")
    held: list[socket.socket] = []
    try:
        time.sleep(0.5)
        failed = 0
        for _ in range(count):
            try:
                held.append(socket.create_connection((HOST, ports["metrics"]), 5))
            except OSError:
                failed += 1
        time.sleep(1)
        closed = 0
        for sock in held:
            sock.setblocking(False)
            try:
                if sock.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        echo_ok = 0
        for _ in range(50):
            try:
                with socket.create_connection((HOST, ports["echo"]), 5) as s:
                    s.sendall(b"ping")
                    echo_ok += s.recv(4) == b"ping"
            except OSError:
                pass
        times = normal_client(ports["echo"], 2.0)
        log = [line.strip() for line in process.log if "metrics listener" in line]  # type: ignore[attr-defined]
        return {
            "scenario": f"{count} idle metrics connections, prlimit --nofile=456",
            "metrics_connections_made": len(held),
            "closed_by_server": closed,
            "connect_failed": failed,
            "echo_probes_ok": f"{echo_ok}/50",
            "echo_p99_ms": p99_ms(times),
            "log": log[:3],
        }
    finally:
        for sock in held:
            sock.close()
        process.kill()
        process.wait(10)


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "pipeline"
    print(json.dumps(pipeline() if which == "pipeline" else idle()))
