"""
Measure how sockecho behaves under abuse: server memory growth and the
latency a well-behaved client sees while another client misbehaves.

    python benchmarks/abuse.py            # about a minute; prints a Markdown table

Each scenario starts a fresh `twistd -n sockecho` on free loopback ports
with the default limits (plus the options the scenario names), runs the
abuse in threads, and meanwhile times 64-byte echo round trips of a normal
client. Everything is bounded in count and time and stays on 127.0.0.1.
"""

from __future__ import annotations

import re
import resource
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

HOST = "127.0.0.1"
TWISTD = str(Path(sys.executable).parent / "twistd")


@contextmanager
def server(*options: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, int]]]:
    args = [TWISTD, "-n", "--pidfile=", "sockecho"]
    for service in ("echo", "upper", "welcome"):
        args += [f"--{service}", f"tcp:0:interface={HOST}"]
    args += ["--udp", f"udp:0:interface={HOST}", *options]
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    ports: dict[str, int] = {}
    deadline = time.monotonic() + 20
    assert process.stdout is not None
    while len(ports) < 4 and time.monotonic() < deadline:
        line = process.stdout.readline()
        match = re.search(r"\] (\w+) listening on \w+:[\d.]+:(\d+)$", line)
        if match:
            ports[match.group(1)] = int(match.group(2))
    threading.Thread(target=lambda: process.stdout.read(), daemon=True).start()  # type: ignore[union-attr]
    try:
        yield process, ports
    finally:
        process.kill()
        process.wait(10)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def normal_client(port: int, seconds: float) -> list[float]:
    """Round-trip times (s) of 64-byte echoes for `seconds`, 2 ms apart."""
    times = []
    payload = b"n" * 64
    end = time.monotonic() + seconds
    with socket.create_connection((HOST, port), timeout=5) as sock:
        while time.monotonic() < end:
            began = time.monotonic()
            sock.sendall(payload)
            got = b""
            while len(got) < 64:
                chunk = sock.recv(64 - len(got))
                if not chunk:
                    raise RuntimeError("normal client was disconnected")
                got += chunk
            times.append(time.monotonic() - began)
            time.sleep(0.002)
    return times


def measure(
    name: str,
    options: tuple[str, ...],
    abuse: Callable[[dict[str, int], dict[str, object]], None],
    seconds: float = 6.0,
) -> dict[str, object]:
    with server(*options) as (process, ports):
        time.sleep(0.5)
        before = rss_kib(process.pid)
        notes: dict[str, object] = {}
        stop = threading.Event()
        notes["stop"] = stop
        worker = threading.Thread(target=abuse, args=(ports, notes), daemon=True)
        worker.start()
        time.sleep(0.5)
        times = normal_client(ports["echo"], seconds)
        peak = rss_kib(process.pid)
        stop.set()
        worker.join(30)
        notes.pop("stop")
        times.sort()
        return {
            "scenario": name,
            "options": " ".join(options) or "(defaults)",
            "rss_growth_mib": round((peak - before) / 1024, 1),
            "p50_us": round(statistics.median(times) * 1e6),
            "p99_us": round(times[int(len(times) * 0.99)] * 1e6),
            "max_us": round(times[-1] * 1e6),
            **notes,
        }


def idle_connections(ports: dict[str, int], notes: dict[str, object]) -> None:
    socks = []
    for _ in range(2000):
        s = socket.socket()
        s.connect((HOST, ports["echo"]))
        socks.append(s)
    notes["held"] = len(socks)
    notes["stop"].wait(30)  # type: ignore[attr-defined]
    for s in socks:
        s.close()


def stalled_reader(ports: dict[str, int], notes: dict[str, object]) -> None:
    sock = socket.create_connection((HOST, ports["echo"]))
    sock.setblocking(False)
    sent, began = 0, time.monotonic()
    chunk = b"s" * 65536
    while time.monotonic() - began < 20:
        select.select([], [sock], [], 0.1)
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            continue
        except OSError:
            notes["aborted_after_s"] = round(time.monotonic() - began, 1)
            break
    notes["accepted_mib"] = round(sent / 2**20, 1)
    sock.close()


def long_line(ports: dict[str, int], notes: dict[str, object]) -> None:
    sock = socket.create_connection((HOST, ports["welcome"]))
    try:
        sock.sendall(b"z" * (10 * 2**20))
    except OSError:
        pass
    sock.settimeout(5)
    reply = b""
    try:
        while chunk := sock.recv(65536):
            reply += chunk
    except OSError:
        pass
    notes["reply"] = reply.splitlines()[-1].decode()[:60]
    sock.close()


def trickle(ports: dict[str, int], notes: dict[str, object]) -> None:
    sock = socket.create_connection((HOST, ports["welcome"]))
    sock.setblocking(False)
    began = time.monotonic()
    while time.monotonic() - began < 20:
        try:
            sock.send(b"t")
            if sock.recv(4096, socket.MSG_PEEK) and b"ERROR" in sock.recv(4096):
                notes["closed_after_s"] = round(time.monotonic() - began, 1)
                break
        except BlockingIOError:
            pass
        except OSError:
            break
        time.sleep(0.5)
    sock.close()


def connect_storm(ports: dict[str, int], notes: dict[str, object]) -> None:
    began, cycles = time.monotonic(), 0
    while cycles < 5000 and time.monotonic() - began < 30:
        with socket.create_connection((HOST, ports["echo"])) as s:
            s.sendall(b"x")
            s.recv(1)
        cycles += 1
    notes["cycles"] = cycles
    notes["cycles_per_s"] = round(cycles / (time.monotonic() - began))


def udp_flood(ports: dict[str, int], notes: dict[str, object]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sent, answered, began = 0, 0, time.monotonic()
    while sent < 200_000 and time.monotonic() - began < 5:
        try:
            sock.sendto(b"f" * 64, (HOST, ports["udp"]))
            sent += 1
        except BlockingIOError:
            pass
        try:
            while sock.recv(100):
                answered += 1
        except BlockingIOError:
            pass
    notes["datagrams_sent"] = sent
    notes["answered"] = answered
    sock.close()


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    rows = [
        measure("none (baseline)", (), lambda p, n: n["stop"].wait(30)),  # type: ignore[attr-defined]
        measure("2,000 idle connections", ("--max-per-peer", "0"), idle_connections),
        measure("sender that never reads", ("--stall-timeout", "5"), stalled_reader, 8),
        measure("10 MB line, no newline", (), long_line),
        measure("line trickled 2 bytes/s", ("--line-timeout", "3"), trickle),
        measure("5,000 connect/close cycles", (), connect_storm),
        measure("UDP flood from one source", (), udp_flood),
    ]
    keys = ["scenario", "options", "rss_growth_mib", "p50_us", "p99_us", "max_us"]
    print("| " + " | ".join(keys) + " | outcome |")
    print("|" + "---|" * (len(keys) + 1))
    for row in rows:
        extra = ", ".join(f"{k}={v}" for k, v in row.items() if k not in keys)
        print("| " + " | ".join(str(row[k]) for k in keys) + f" | {extra} |")


if __name__ == "__main__":
    main()
