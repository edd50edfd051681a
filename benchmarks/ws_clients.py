"""
Many concurrent WebSocket clients against one sockecho (issue 23's
acceptance run: 1,000 clients exchanging 1 KiB messages, every message
intact), measured by hand:

    python benchmarks/ws_clients.py                  # 1,000 clients, 10 s, 1 KiB
    python benchmarks/ws_clients.py --clients 200 --duration 3

sockecho (`--websocket`, connection limits off) runs pinned to CPU 0, the
client (`sockecho-client load ws://...`, one binary message in flight per
connection, each echo checked byte for byte) pinned to CPU 1. Bounded: the
load stops after `--duration` seconds or `--messages` messages, whichever is
first, and the server is always stopped. Prints one JSON object: the
client's report (messages/s, latency percentiles in µs, errors), the
server's RSS before the load, its peak (VmHWM) and after, and its CPU time
per message.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"sockecho exited with status {proc.returncode}")
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("sockecho did not listen in time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--size", type=int, default=1024, help="message bytes")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds")
    ap.add_argument("--messages", type=int, default=200_000, help="at most")
    a = ap.parse_args()
    port = free_port()
    bindir = Path(sys.executable).parent
    server = subprocess.Popen(
        ["taskset", "-c", "0", str(bindir / "twistd"), "-n", "--pidfile=",
         "sockecho", "--no-echo", "--no-upper", "--no-welcome", "--no-udp",
         "--max-connections=0", "--max-per-peer=0",
         "--websocket", f"tcp:{port}:interface={HOST}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_listening(port, server, 20)
        rss_before = status_kib(server.pid, "VmRSS")
        cpu_before = cpu_seconds(server.pid)
        client = subprocess.run(
            ["taskset", "-c", "1", sys.executable, "-m", "twisted_echo.client",
             "load", f"ws://{HOST}:{port}/", "-c", str(a.clients),
             "-s", str(a.size), "-d", str(a.duration), "-n", str(a.messages),
             "--timeout", "30", "--json"],
            capture_output=True, text=True, timeout=a.duration + 120,
        )  # fmt: skip
        cpu = cpu_seconds(server.pid) - cpu_before
        report = json.loads(client.stdout) if client.stdout.strip() else {}
        messages = report.get("requests", 0)
        print(
            json.dumps(
                {
                    "client_status": client.returncode,
                    "client_stderr": client.stderr.strip()[-300:],
                    "report": report,
                    "server_rss_kib": {
                        "before": rss_before,
                        "peak": status_kib(server.pid, "VmHWM"),
                        "after": status_kib(server.pid, "VmRSS"),
                    },
                    "server_cpu_s": round(cpu, 2),
                    "server_us_per_message": round(cpu / messages * 1e6, 1)
                    if messages
                    else None,
                },
                indent=1,
            )
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
