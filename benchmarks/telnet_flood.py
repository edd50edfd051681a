"""
Measure a telnet command flood against a running sockecho (issue 19, item 5):
the server's CPU per MB of flood, against plain lines, and the echo round
trips of another client meanwhile.

    python benchmarks/telnet_flood.py --pid PID --welcome 7009 --echo 7007 \\
        --mode flood --seconds 5

Modes (each bounded by --seconds and --limit bytes, loopback only):
 - ``flood``: one connection sends ``IAC DO ECHO`` as fast as the server
   takes it, without reading;
 - ``reconnect``: the same, opening a new connection each time the server
   closes one (what a flooder does against a per-connection limit);
 - ``lines``: one connection sends 64-byte lines and reads the replies.

Prints one JSON object: bytes the flood sent, the server's CPU seconds
(``/proc/PID/stat``, user + system) over the run and per MB sent, and the
echo client's round-trip p50 and p99 in ms (64-byte echoes, 2 ms apart).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from abuse import HOST, cpu_seconds, normal_client  # noqa: E402

DO_ECHO = b"\xff\xfd\x01"


def drain(sock: socket.socket) -> None:
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def flood(port: int, until: float, limit: int, reconnect: bool) -> tuple[int, int]:
    """
    @return: bytes sent and connections used.
    """
    chunk = DO_ECHO * 21845
    sent = connections = 0
    while time.monotonic() < until and sent < limit:
        connections += 1
        with socket.create_connection((HOST, port), timeout=5) as sock:
            sock.settimeout(0.5)
            try:
                while time.monotonic() < until and sent < limit:
                    sent += sock.send(chunk)
            except OSError:
                pass
            drain(sock)
        if not reconnect:
            break
    return sent, connections


def lines(port: int, until: float, limit: int) -> tuple[int, int]:
    line = b"x" * 63 + b"\n"
    batch = line * 256
    sent = 0
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.recv(1024)  # banner
        while time.monotonic() < until and sent < limit:
            sock.sendall(batch)
            sent += len(batch)
            want = 256 * (5 + 63 + 2)
            got = 0
            while got < want:
                got += len(sock.recv(65536))
    return sent, 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--welcome", type=int, default=7009)
    parser.add_argument("--echo", type=int, default=7007)
    parser.add_argument(
        "--mode", choices=("flood", "reconnect", "lines"), default="flood"
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--limit", type=int, default=256 << 20, help="bytes")
    args = parser.parse_args()
    until = time.monotonic() + args.seconds
    times: list[float] = []
    echo = threading.Thread(
        target=lambda: times.extend(normal_client(args.echo, args.seconds + 0.5))
    )
    cpu_before = cpu_seconds(args.pid)
    echo.start()
    if args.mode == "lines":
        sent, connections = lines(args.welcome, until, args.limit)
    else:
        sent, connections = flood(
            args.welcome, until, args.limit, args.mode == "reconnect"
        )
    echo.join()
    cpu = cpu_seconds(args.pid) - cpu_before
    cuts = statistics.quantiles([t * 1000 for t in times], n=100)
    print(
        json.dumps(
            {
                "mode": args.mode,
                "bytes_sent": sent,
                "connections": connections,
                "server_cpu_s": round(cpu, 2),
                "cpu_s_per_mb": round(cpu / (sent / 1e6), 3) if sent else None,
                "echo_round_trips": len(times),
                "echo_p50_ms": round(cuts[49], 2),
                "echo_p99_ms": round(cuts[98], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
