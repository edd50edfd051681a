"""
Issue 19 item 1 at full size, against a real `twistd -n sockecho`: a client
sends 10 MiB to echo and reads 10 KB every 0.1 s (100 KB/s, default socket
buffers) with `--stall-timeout 3`. Prints how many bytes came back, how the
connection ended, how long it took, and the server's stall log lines.

    python benchmarks/stall.py                    # about 110 s
    python benchmarks/stall.py --size 2M --read 20000 --every 0.1

Everything stays on 127.0.0.1 and is bounded in time (size / rate + 60 s).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HOST = "127.0.0.1"
TWISTD = str(Path(sys.executable).parent / "twistd")


def size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20}
    if text[-1:] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=size, default=10 << 20)
    parser.add_argument("--read", type=int, default=10_000, help="bytes per read")
    parser.add_argument("--every", type=float, default=0.1, help="seconds per read")
    parser.add_argument("--stall-timeout", default="3")
    args = parser.parse_args()

    command = [
        TWISTD, "-n", "--pidfile=", "sockecho",
        "--echo", f"tcp:0:interface={HOST}", "--upper", f"tcp:0:interface={HOST}",
        "--welcome", f"tcp:0:interface={HOST}", "--udp", f"udp:0:interface={HOST}",
        "--stall-timeout", args.stall_timeout,
    ]  # fmt: skip
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert server.stdout is not None
    log: list[str] = []
    port = 0
    deadline = time.monotonic() + 20
    while not port and time.monotonic() < deadline:
        line = server.stdout.readline()
        log.append(line)
        match = re.search(r"\] echo listening on tcp:[\d.]+:(\d+)$", line)
        if match:
            port = int(match.group(1))
    threading.Thread(target=lambda: log.extend(server.stdout), daemon=True).start()  # type: ignore[arg-type]
    try:
        payload = bytes(range(256)) * (args.size // 256)
        sock = socket.create_connection((HOST, port), 10)
        sock.settimeout(30)

        def send() -> None:
            try:
                sock.sendall(payload)
            except OSError:
                pass

        threading.Thread(target=send, daemon=True).start()
        started = time.monotonic()
        limit = started + len(payload) / (args.read / args.every) + 60
        received = 0
        digest = hashlib.sha256()
        outcome = "timeout"
        next_read = started
        while time.monotonic() < limit:
            try:
                data = sock.recv(args.read)
            except ConnectionResetError:
                outcome = "reset by the server"
                break
            if not data:
                outcome = "closed by the server"
                break
            received += len(data)
            digest.update(data)
            if received == len(payload):
                outcome = "complete"
                break
            next_read += args.every
            time.sleep(max(0.0, next_read - time.monotonic()))
        elapsed = time.monotonic() - started
        sock.close()
        intact = digest.digest() == hashlib.sha256(payload).digest()
        print(
            f"sent {len(payload)} bytes, read {args.read} every {args.every} s, "
            f"--stall-timeout {args.stall_timeout}: {outcome} after {elapsed:.1f} s, "
            f"{received} bytes back" + (" (intact)" if intact else "")
        )
        time.sleep(0.5)
        for line in log:
            if "read nothing" in line or "closed:" in line:
                print("  server:", line.rstrip())
    finally:
        server.kill()
        server.wait(10)


if __name__ == "__main__":
    main()
