"""
Measure how sockecho behaves under abuse: server memory growth and the
latency a well-behaved client sees while another client misbehaves.

    python benchmarks/abuse.py            # about a minute; prints a Markdown table
    python benchmarks/abuse.py --horde    # 4,000 non-reading clients; about a minute
    python benchmarks/abuse.py --tls-bursts   # TLS connections without a handshake

Each scenario starts a fresh `twistd -n sockecho` on free loopback ports
with the default limits (plus the options the scenario names), runs the
abuse in threads, and meanwhile times 64-byte echo round trips of a normal
client. Everything is bounded in count and time and stays on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import resource
import select
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
    ports = read_ports(process, 4)
    threading.Thread(target=lambda: process.stdout.read(), daemon=True).start()  # type: ignore[union-attr]
    try:
        yield process, ports
    finally:
        process.kill()
        process.wait(10)


def read_ports(process: subprocess.Popen[str], count: int) -> dict[str, int]:
    """
    Read a starting sockecho's log until C{count} services said where they
    listen (at most 20 s).

    @return: each service's port, by name.
    """
    ports: dict[str, int] = {}
    deadline = time.monotonic() + 20
    assert process.stdout is not None
    while len(ports) < count and time.monotonic() < deadline:
        line = process.stdout.readline()
        match = re.search(r"\] (\w+) listening on \w+:[\d.]+:(\d+)$", line)
        if match:
            ports[match.group(1)] = int(match.group(2))
    return ports


def cpu_seconds(pid: int) -> float:
    """
    @return: the user and system CPU time process C{pid} has used, seconds.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    if "--horde" in sys.argv[1:]:
        horde(64, ())
        return
    if "--tls-bursts" in sys.argv[1:]:
        tls_bursts()
        return
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


# --- The horde: many clients that write and never read (issue: --max-buffer) ---

HORDE_CONNECTIONS = 4000
HORDE_SOURCES = 5  # 127.0.0.1 .. 127.0.0.5, each under --max-per-peer
HORDE_SECONDS = 30.0


def horde_process(ports: list[int], connections: int, seconds: float) -> None:
    """
    Open `connections` connections from HORDE_SOURCES loopback addresses to
    `ports` in turn, and write 64 KiB chunks to each as fast as it takes
    them, never reading, for `seconds`. Runs in its own process.
    """
    import selectors

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    chunk = b"h" * 65536
    selector = selectors.DefaultSelector()
    socks = []
    for i in range(connections):
        sock = socket.socket()
        sock.bind((f"127.0.0.{1 + i % HORDE_SOURCES}", 0))
        sock.connect((HOST, ports[i % len(ports)]))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_WRITE)
        socks.append(sock)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for key, _ in selector.select(0.2):
            try:
                key.fileobj.send(chunk)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                selector.unregister(key.fileobj)
    for sock in socks:
        sock.close()


def stream_mb_per_s(port: int, seconds: float) -> float:
    """Echo 64 KiB chunks through `port` for `seconds`, sending and reading at
    once; return the MB/s that came back."""
    chunk = os.urandom(65536)
    sock = socket.create_connection((HOST, port), timeout=10)
    received = [0]
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                data = sock.recv(1 << 20)
            except OSError:
                return
            if not data:
                return
            received[0] += len(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    began = time.monotonic()
    start_count = 0
    while time.monotonic() - began < seconds:
        sock.sendall(chunk)
    elapsed = time.monotonic() - began
    got = received[0] - start_count
    stop.set()
    sock.shutdown(socket.SHUT_WR)
    reader.join(10)
    sock.close()
    return got / elapsed / 1e6


def line_client(port: int, seconds: float, service: str) -> list[float]:
    """Round-trip times (s) of one short request every 2 ms for `seconds`:
    a 64-byte echo or upper request, or a welcome line."""
    times = []
    end = time.monotonic() + seconds
    with socket.create_connection((HOST, port), timeout=10) as sock:
        if service == "welcome":
            banner = b""
            while not banner.endswith(b"\r\n"):
                banner += sock.recv(4096)
            request, reply_size = b"x" * 62 + b"\r\n", len(b"OK...") + 64
        else:
            request, reply_size = b"n" * 64, 64
        while time.monotonic() < end:
            began = time.monotonic()
            sock.sendall(request)
            got = 0
            while got < reply_size:
                data = sock.recv(reply_size - got)
                if not data:
                    raise RuntimeError(f"{service} client was disconnected")
                got += len(data)
            times.append(time.monotonic() - began)
            time.sleep(0.002)
    return times


def p99_ms(times: list[float]) -> float:
    times = sorted(times)
    return round(times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3, 1)


def normal_clients(ports: dict[str, int], seconds: float) -> dict[str, float]:
    """p99 round trips (ms) of echo, upper and welcome clients run at once."""
    results: dict[str, float] = {}

    def run(service: str) -> None:
        results[service] = p99_ms(line_client(ports[service], seconds, service))

    threads = [
        threading.Thread(target=run, args=(s,)) for s in ("echo", "upper", "welcome")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    return results


def sink_process(ready: Any) -> None:
    """
    A server that accepts every connection and never reads: the horde's
    kernel buffers without any sockecho in the way. Sends its port on
    `ready`.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(4096)
    ready.put(listener.getsockname()[1])
    kept = []
    while True:
        kept.append(listener.accept()[0])


def kernel_tcp_pages() -> tuple[int, int]:
    """(pages of TCP socket memory in use, pages where the kernel's memory
    pressure starts: net.ipv4.tcp_mem[1])."""
    with open("/proc/net/sockstat") as f:
        used = next(int(x.split()[-1]) for x in f if x.startswith("TCP:"))
    with open("/proc/sys/net/ipv4/tcp_mem") as f:
        pressure = int(f.read().split()[1])
    return used, pressure


def horde(budget_mib: float, options: tuple[str, ...]) -> None:
    """
    The acceptance measurement for --max-buffer: a horde of non-reading
    connections, with the server on CPU 0 and every client on CPU 1.
    """
    import multiprocessing

    os.sched_setaffinity(0, {1})
    with server(*options) as (process, ports):
        os.sched_setaffinity(process.pid, {0})
        time.sleep(0.5)
        before = rss_kib(process.pid)
        alone_stream = stream_mb_per_s(ports["echo"], 5)
        alone = normal_clients(ports, 5)
        horde = multiprocessing.Process(
            target=horde_process,
            args=([ports["echo"], ports["upper"]], HORDE_CONNECTIONS, HORDE_SECONDS),
        )
        horde.start()
        began = time.monotonic()
        peak = [before]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], rss_kib(process.pid))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        time.sleep(10)  # let the horde connect and fill what it can
        during_stream = stream_mb_per_s(ports["echo"], 5)
        during = normal_clients(ports, 5)
        during_pages = kernel_tcp_pages()
        time.sleep(max(0.0, HORDE_SECONDS - (time.monotonic() - began)))
        horde.join(60)
        sampling.set()
        sampler.join(5)
        # Control: the same horde against a server that never reads at all,
        # while the same normal client streams through sockecho.
        ready: Any = multiprocessing.Queue()
        sink = multiprocessing.Process(target=sink_process, args=(ready,), daemon=True)
        sink.start()
        sink_port = ready.get(timeout=10)
        os.sched_setaffinity(sink.pid, {0})
        time.sleep(2)
        control = multiprocessing.Process(
            target=horde_process, args=([sink_port], HORDE_CONNECTIONS, 20)
        )
        control.start()
        time.sleep(10)
        control_stream = stream_mb_per_s(ports["echo"], 5)
        control_pages = kernel_tcp_pages()
        control.join(60)
        sink.terminate()
        growth_mib = (peak[0] - before) / 1024
        bound_mib = budget_mib + HORDE_CONNECTIONS / 1024 + 32
        print(f"options: {' '.join(options) or '(defaults)'}")
        print("| figure | without the horde | during the horde | bar |")
        print("|---|---|---|---|")
        print(
            f"| server RSS growth | | {growth_mib:.1f} MiB | "
            f"≤ {bound_mib:.1f} MiB (budget + 1 KiB/conn + 32 MiB) |"
        )
        for service in ("echo", "upper", "welcome"):
            print(
                f"| {service} p99 round trip | {alone[service]} ms | "
                f"{during[service]} ms | < 250 ms |"
            )
        print(
            f"| echo stream, 64 KiB chunks | {alone_stream:.0f} MB/s | "
            f"{during_stream:.0f} MB/s ({during_stream / alone_stream:.0%}) | ≥ 50 % |"
        )
        print(
            f"| kernel TCP memory (pages; pressure from {during_pages[1]}) | | "
            f"{during_pages[0]} | |"
        )
        print(
            "| control: same horde against a server that never reads; "
            f"echo stream through sockecho | {alone_stream:.0f} MB/s | "
            f"{control_stream:.0f} MB/s ({control_stream / alone_stream:.0%}), "
            f"kernel TCP memory {control_pages[0]} pages | |"
        )


# --- TLS connections that never send a ClientHello (issue 19, item 6) ---

TLS_BURSTS = 5
TLS_BURST_CONNECTIONS = 1000


def tls_bursts(
    bursts: int = TLS_BURSTS, connections: int = TLS_BURST_CONNECTIONS
) -> None:
    """
    The acceptance measurement for handshake-less TLS connections: an echo
    listener over TLS (a throwaway certificate), the server on CPU 0 and
    the client on CPU 1; `bursts` times, open `connections` TCP connections
    that send nothing, wait until the server has logged them all, close
    them all from the client side and wait until the server has logged them
    all closed. Prints the server's RSS at the start, with each burst held
    and after each, and 5 s after the last. Bounded: every wait has a
    deadline; loopback only.
    """
    import tempfile

    from twisted_echo.listening.certificate import self_signed_certificate, write_pem

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    directory = tempfile.mkdtemp(prefix="sockecho-tls-bursts-")
    key, certificate = self_signed_certificate()
    key_path, cert_path = f"{directory}/key.pem", f"{directory}/cert.pem"
    write_pem(key, certificate, cert_path, key_path)
    args = [
        TWISTD, "-n", "--pidfile=", "sockecho",
        "--echo", f"ssl:0:interface={HOST}:privateKey={key_path}:certKey={cert_path}",
        "--no-upper", "--no-welcome", "--no-udp", "--max-per-peer", "0",
        *sys.argv[sys.argv.index("--tls-bursts") + 1 :],
    ]  # fmt: skip
    os.sched_setaffinity(0, {1})
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        os.sched_setaffinity(process.pid, {0})
        assert process.stdout is not None
        port = 0
        deadline = time.monotonic() + 20
        while not port and time.monotonic() < deadline:
            match = re.search(r"echo listening on ssl:[\d.]+:(\d+)$",
                              process.stdout.readline())  # fmt: skip
            port = int(match.group(1)) if match else 0
        if not port:
            raise RuntimeError("the server did not start")
        opened, closed = [0], [0]

        def read_log() -> None:
            for line in process.stdout:  # type: ignore[union-attr]
                if "echo connection from ssl:" in line:
                    if " closed: " in line:
                        closed[0] += 1
                    else:
                        opened[0] += 1

        threading.Thread(target=read_log, daemon=True).start()

        def wait(what: str, count: list[int], target: int) -> None:
            deadline = time.monotonic() + 60
            while count[0] < target:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what}: {count[0]} of {target} in 60 s")
                time.sleep(0.05)

        time.sleep(1)
        start = rss_kib(process.pid)
        print(f"server: {' '.join(args[3:])}")
        print(f"RSS at start: {start / 1024:.1f} MiB")
        for burst in range(1, bursts + 1):
            socks = []
            for _ in range(connections):
                socks.append(socket.create_connection((HOST, port), timeout=10))
            wait("opened", opened, burst * connections)
            held = rss_kib(process.pid)
            for sock in socks:
                sock.close()
            wait("closed", closed, burst * connections)
            after = rss_kib(process.pid)
            print(
                f"burst {burst}: {connections} held: +{(held - start) / 1024:.1f} MiB"
                f" ({(held - start) / connections:.1f} KiB each over the start);"
                f" all closed: +{(after - start) / 1024:.1f} MiB"
            )
        time.sleep(5)
        end = rss_kib(process.pid)
        print(f"RSS 5 s after the last burst: +{(end - start) / 1024:.1f} MiB"
              " over the start (bar: < 32 MiB)")  # fmt: skip
    finally:
        process.kill()
        process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
