"""
Issue 23's 1,000-client acceptance checks for the WebSocket service, run by
hand (not a test): a real C{twistd sockecho --websocket} pinned to CPU 0,
the clients (the C{websockets} library, asyncio, one process) pinned to
CPU 1. Every run is bounded in clients, bytes and seconds.

    python benchmarks/ws_thousand.py intact [--clients 1000] [--messages 20]
    python benchmarks/ws_thousand.py stalled [--clients 1000] [--mib 4]

C{intact}: C{--clients} connections open at once, each sends C{--messages}
binary messages of 1 KiB (random) one after the other and checks each echo
is the same bytes. Prints the messages checked and intact, the message rate
and the server's CPU time per message.

C{stalled}: C{--clients} connections complete the handshake, then each
sends C{--mib} MiB of 64 KiB binary messages and never reads: the server
echoes until each one's queue and the kernel's buffers are full, then stops
reading from it (flow control). Meanwhile 50 other clients send 1 KiB
messages and read each echo for C{--seconds}. Prints the server's RSS
(idle, with the connections open, during the flood), the C{--max-buffer}
budget, the per-connection cost, and the reading clients' round-trip p50
and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

HOST = "127.0.0.1"
KIB = 1024
MIB = 1024 * KIB
#: The bound on each phase's wait, seconds.
PHASE_TIMEOUT = 120.0


def server_command(ports_file: str, extra: list[str]) -> list[str]:
    return [
        "taskset",
        "-c",
        "0",
        os.path.join(os.path.dirname(sys.executable), "twistd"),
        "-n",
        "--pidfile=",
        "sockecho",
        "--no-echo",
        "--no-upper",
        "--no-welcome",
        "--no-udp",
        "--websocket",
        f"tcp:0:interface={HOST}",
        "--max-per-peer",
        "0",
        "--log-level",
        "warn",
        "--ports-file",
        ports_file,
        *extra,
    ]


def start_server(extra: list[str]) -> tuple[subprocess.Popen[bytes], int, str]:
    """
    @return: the server process, its WebSocket port, its ports file.
    """
    directory = tempfile.mkdtemp(prefix="ws-thousand-")
    ports_file = os.path.join(directory, "ports.json")
    process = subprocess.Popen(server_command(ports_file, extra))
    deadline = time.monotonic() + 30
    while not os.path.exists(ports_file):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    with open(ports_file) as f:
        port = json.load(f)["listeners"]["websocket"][0]["port"]
    return process, int(port), ports_file


def rss(pid: int) -> int:
    """
    @return: the process's resident set size now (C{VmRSS}), bytes.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KIB
    return 0


def cpu_seconds(pid: int) -> float:
    """
    @return: the process's user + system CPU time so far, seconds.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def open_all(
    url: str, count: int, compression: str | None, **kw: Any
) -> list[Any]:
    """
    Open C{count} connections, 100 handshakes at a time.
    """
    from websockets.asyncio.client import connect

    limit = asyncio.Semaphore(100)

    async def one() -> Any:
        async with limit:
            return await connect(
                url, compression=compression, max_size=None, open_timeout=60, **kw
            )

    return list(
        await asyncio.wait_for(
            asyncio.gather(*(one() for _ in range(count))), PHASE_TIMEOUT
        )
    )


async def intact(args: argparse.Namespace) -> None:
    process, port, _ = start_server([])
    try:
        url = f"ws://{HOST}:{port}/"
        compression = "deflate" if args.deflate else None
        connections = await open_all(url, args.clients, compression)
        print(
            f"{len(connections)} connections open; server RSS "
            f"{rss(process.pid) / MIB:.1f} MiB"
        )
        checked = 0
        bad = 0

        async def exchange(ws: Any) -> None:
            nonlocal checked, bad
            for _ in range(args.messages):
                payload = os.urandom(KIB)
                await ws.send(payload)
                echo = await ws.recv()
                checked += 1
                if echo != payload:
                    bad += 1

        cpu0 = cpu_seconds(process.pid)
        start = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(exchange(ws) for ws in connections)), PHASE_TIMEOUT
        )
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(process.pid) - cpu0
        await asyncio.gather(*(ws.close() for ws in connections))
        total = args.clients * args.messages
        print(
            f"messages: {checked} of {total} checked, {checked - bad} intact, "
            f"{bad} corrupted"
        )
        print(
            f"{checked / elapsed:,.0f} messages/s ({elapsed:.2f} s); server CPU "
            f"{cpu:.2f} s = {cpu / checked * 1e6:.0f} us per message echoed"
            f"{' (permessage-deflate)' if args.deflate else ''}"
        )
        if checked != total or bad:
            raise SystemExit(1)
    finally:
        process.terminate()
        process.wait(30)


async def handshake(
    port: int, rcvbuf: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """
    A raw WebSocket handshake (no library: the client must never read),
    on a socket whose receive and send buffers are C{rcvbuf} bytes (0: the
    kernel's defaults, autotuned up to C{net.ipv4.tcp_rmem}'s and
    C{tcp_wmem}'s maximums).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"handshake refused: {head[:60]!r}")
    return reader, writer


def binary_frame(payload: bytes) -> bytes:
    """
    @return: a client's binary frame of C{payload} (64 KiB at most), masked
        with a zero key.
    """
    return b"\x82\xfe" + struct.pack("!H", len(payload)) + b"\0\0\0\0" + payload


async def stalled(args: argparse.Namespace) -> None:
    process, port, _ = start_server(["--max-buffer", args.max_buffer])
    pid = process.pid
    try:
        await asyncio.sleep(0.5)
        idle_rss = rss(pid)
        streams = await asyncio.wait_for(
            asyncio.gather(
                *(handshake(port, args.rcvbuf) for _ in range(args.clients))
            ),
            PHASE_TIMEOUT,
        )
        open_rss = rss(pid)
        per_connection = (open_rss - idle_rss) / args.clients
        print(
            f"server RSS: {idle_rss / MIB:.1f} MiB idle, {open_rss / MIB:.1f} MiB "
            f"with {args.clients} WebSockets open "
            f"({per_connection / KIB:.1f} KiB each)"
        )
        frame = binary_frame(os.urandom(64 * KIB - 8))
        frames = args.mib * MIB // len(frame)

        async def flood(writer: asyncio.StreamWriter) -> int:
            sent = 0
            for _ in range(frames):
                writer.write(frame)
                try:
                    await asyncio.wait_for(writer.drain(), 2.0)
                except TimeoutError:
                    break  # the server stopped reading: flow control
                sent += len(frame)
            return sent

        flood_start = time.monotonic()
        flooding = asyncio.gather(*(flood(w) for _, w in streams))
        if args.after:
            # The reading clients start once every stalled client is
            # stalled: the server echoes nothing more and reads none of them.
            sent = await asyncio.wait_for(flooding, PHASE_TIMEOUT)
            # What the clients' transports still buffer goes on as the
            # server reads: wait until the server is quiet too.
            await wait_quiet(pid)
            print(f"flood stalled after {time.monotonic() - flood_start:.1f} s")
        else:
            # The reading clients start while the flood is under way.
            await asyncio.sleep(2.0)
        peak = rss(pid)
        cpu0, client0 = cpu_seconds(pid), time.process_time()
        waited0 = run_queue_wait(pid)
        latencies = await readers(port, args.readers, args.seconds, pid)
        print(
            f"during the readers' {args.seconds:g} s: server CPU "
            f"{cpu_seconds(pid) - cpu0:.1f} s, server waiting for its CPU "
            f"(taken by other processes) {run_queue_wait(pid) - waited0:.1f} s, "
            f"client CPU {time.process_time() - client0:.1f} s; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        peak = max(peak, int(latencies.pop()))
        if not args.after:
            sent = await asyncio.wait_for(flooding, PHASE_TIMEOUT)
            print(f"flood stalled after {time.monotonic() - flood_start:.1f} s")
        peak = max(peak, rss(pid))
        rtts = sorted(latencies)
        budget = parse_size(args.max_buffer)
        print(
            f"kernel TCP memory now: {tcp_memory() / MIB:,.0f} MiB "
            f"(net.ipv4.tcp_mem pressure at {tcp_pressure() / MIB:,.0f} MiB)"
        )
        print(
            f"stalled clients sent {sum(sent) / MIB:,.0f} MiB in all "
            f"({min(sent) / MIB:.1f} to {max(sent) / MIB:.1f} MiB each) before "
            f"the server stopped reading them"
        )
        print(
            f"server RSS peak during the flood: {peak / MIB:.1f} MiB; bound: "
            f"open-connections RSS {open_rss / MIB:.1f} MiB + --max-buffer "
            f"{budget / MIB:.0f} MiB = {(open_rss + budget) / MIB:.1f} MiB: "
            f"{'within' if peak <= open_rss + budget else 'OVER'}"
        )
        p50 = statistics.median(rtts) * 1e3
        p99 = rtts[int(len(rtts) * 0.99) - 1] * 1e3
        print(
            f"{args.readers} reading clients: {len(rtts)} round trips of 1 KiB, "
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {rtts[-1] * 1e3:.2f} ms: "
            f"{'under' if p99 < 250 else 'OVER'} 250 ms"
        )
        for _, writer in streams:
            writer.transport.abort()
    finally:
        process.terminate()
        process.wait(30)


async def readers(port: int, count: int, seconds: float, pid: int) -> list[float]:
    """
    C{count} clients each sending 1 KiB and reading its echo, for
    C{seconds}.

    @return: every round trip, seconds, then the server's peak RSS seen.
    """
    connections = await open_all(f"ws://{HOST}:{port}/", count, None)
    rtts: list[float] = []
    end = time.monotonic() + seconds
    peak = 0

    async def one(ws: Any) -> None:
        payload = os.urandom(KIB)
        while time.monotonic() < end:
            start = time.perf_counter()
            await ws.send(payload)
            echo = await ws.recv()
            rtts.append(time.perf_counter() - start)
            if echo != payload:
                raise SystemExit("a reading client got a corrupted echo")

    async def watch() -> None:
        nonlocal peak
        while time.monotonic() < end:
            peak = max(peak, rss(pid))
            await asyncio.sleep(0.2)

    await asyncio.wait_for(
        asyncio.gather(watch(), *(one(ws) for ws in connections)), seconds + 60
    )
    await asyncio.gather(*(ws.close() for ws in connections))
    return [*rtts, float(peak)]


async def wait_quiet(pid: int) -> None:
    """
    Wait (at most L{PHASE_TIMEOUT}) until the server uses under 2% of a CPU
    over a second.
    """
    deadline = time.monotonic() + PHASE_TIMEOUT
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        await asyncio.sleep(1.0)
        if cpu_seconds(pid) - before < 0.02:
            return


def run_queue_wait(pid: int) -> float:
    """
    @return: the seconds the process has been runnable but waiting for a
        CPU (C{/proc/PID/schedstat}'s second field), all its threads.
    """
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[1])
    return total / 1e9


def tcp_memory() -> int:
    """
    @return: the memory all TCP sockets use now (/proc/net/sockstat), bytes.
    """
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1]) * os.sysconf("SC_PAGESIZE")
    return 0


def tcp_pressure() -> int:
    """
    @return: the TCP memory above which the kernel is under pressure, bytes.
    """
    with open("/proc/sys/net/ipv4/tcp_mem") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGESIZE")


def parse_size(text: str) -> int:
    units = {"K": KIB, "M": MIB, "G": 1024 * MIB}
    if text[-1:].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="check", required=True)
    one = sub.add_parser("intact", help="1,000 clients exchanging 1 KiB messages")
    one.add_argument("--clients", type=int, default=1000)
    one.add_argument("--messages", type=int, default=20)
    one.add_argument(
        "--deflate",
        action="store_true",
        help="let the clients negotiate permessage-deflate",
    )
    two = sub.add_parser("stalled", help="1,000 clients that never read")
    two.add_argument("--clients", type=int, default=1000)
    two.add_argument("--mib", type=int, default=4, help="MiB each sends at most")
    two.add_argument("--readers", type=int, default=50)
    two.add_argument("--seconds", type=float, default=10.0)
    two.add_argument("--max-buffer", default="64M")
    two.add_argument(
        "--rcvbuf",
        type=int,
        default=65536,
        help="the stalled clients' SO_RCVBUF and SO_SNDBUF, bytes (0: the "
        "kernel's autotuning; "
        "1,000 of them then fill over a GB of kernel memory and put loopback TCP "
        "under memory pressure, net.ipv4.tcp_mem)",
    )
    two.add_argument(
        "--after",
        action="store_true",
        help="start the reading clients once the flood has stalled and the "
        "server is quiet",
    )
    args = parser.parse_args()
    if not 1 <= args.clients <= 5000:
        raise SystemExit("--clients: 1 to 5000")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 4 * args.clients + 1024)
    if soft < wanted:
        # The server inherits it.
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    os.sched_setaffinity(0, {1})
    asyncio.run(intact(args) if args.check == "intact" else stalled(args))


if __name__ == "__main__":
    main()
