"""
Benchmark sockecho against the echo servers Python users would pick instead.

    pip install -e '.[bench]'           # uvloop and matplotlib, once
    python benchmarks/run.py            # full run: 3 rounds, 0.5 + 2.5 s per point
    python benchmarks/run.py --quick    # 1 round, 1.5 s per point (development)

Each server (a "peer") runs alone, pinned to CPU 0; the load generator
(benchmarks/loadgen.c, compiled here with gcc -O2) runs pinned to CPU 1.
Peers are interleaved in rounds (A B C, C B A, ...); each figure is the median
over the rounds, with min and max, and a ratio to the other peers of the same
run. A full run writes docs/benchmarks.md and docs/benchmarks.png; --quick
writes them under benchmarks/build/ unless --out-dir is given. The raw results
go to benchmarks/build/results.json; --render FILE redraws the report from one.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import counting

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / "build"
PEERS_DIR = HERE / "peers"
SERVER_CPU, LOADGEN_CPU = "0", "1"
HOST = "127.0.0.1"
#: sockecho's UDP echo on the wildcard address 0.0.0.0: the `udp` load (the
#: generator still sends to 127.0.0.1), answered through the recvmsg/sendmsg
#: path that replies from each datagram's destination address (IP_PKTINFO).
WILDCARD = "udp-wildcard"
WILDCARD_HOST = "0.0.0.0"
REFERENCE = "asyncio-protocol"
QUIET = 0.15  # share of two CPUs' time counted as "quiet" before a point
RETRY_SHARE = 0.15  # at most this share of the points is measured twice
NOISY = 0.25  # other jobs' share above which a point is measured once more


@dataclass(frozen=True)
class Peer:
    key: str
    label: str
    services: tuple[str, ...]
    script: str = ""  # a file in benchmarks/peers/, or "" for special ones
    ceiling_only: bool = False
    options: tuple[str, ...] = ()  # sockecho's: more options

    def command(self, ports: dict[str, int]) -> list[str]:
        if self.key.startswith("sockecho"):
            twistd = str(Path(sys.executable).parent / "twistd")
            cmd = [twistd, "-n", "--pidfile=", "sockecho", *sockecho_unlimited()]
            cmd += self.options
            for service, port in ports.items():
                if service == WILDCARD:
                    cmd += ["--udp", f"udp:{port}:interface={WILDCARD_HOST}"]
                    continue
                kind = "udp" if service == "udp" else "tcp"
                cmd += [f"--{service}", f"{kind}:{port}:interface={HOST}"]
            return cmd
        if self.key == "c-epoll":
            return [
                str(BUILD / "c_echo"),
                "--echo",
                str(ports["echo"]),
                "--udp",
                str(ports["udp"]),
            ]
        cmd = [sys.executable, str(PEERS_DIR / self.script)]
        for service, port in ports.items():
            cmd += [f"--{service}", str(port)]
        return cmd


#: sockecho's safety limits, switched off for the benchmark when it has them:
#: its defaults cap connections per address and UDP datagrams per second.
SOCKECHO_LIMITS = (
    "--max-connections",
    "--max-per-peer",
    "--udp-rate",
    "--udp-global-rate",
)


@functools.cache
def sockecho_unlimited() -> list[str]:
    """`--option=0` for each of SOCKECHO_LIMITS that `twistd sockecho` knows."""
    twistd = str(Path(sys.executable).parent / "twistd")
    shown = subprocess.run(
        [twistd, "sockecho", "--help"], capture_output=True, text=True, cwd=ROOT
    ).stdout
    return [f"{option}=0" for option in SOCKECHO_LIMITS if f"{option}=" in shown]


ALL = ("echo", "upper", "welcome", "udp")
PEERS = [
    Peer("sockecho", "sockecho", (*ALL, WILDCARD)),
    # The same server logging JSON records (--log-format json) instead of
    # text lines: its per-connection cost, next to the default's.
    Peer(
        "sockecho-json", "sockecho, JSON log", ("echo",), options=("--log-format=json",)
    ),
    Peer("twisted-wire", "Twisted wire.Echo", ("echo", "udp"), "twisted_wire.py"),
    Peer("asyncio-protocol", "asyncio Protocol", ALL, "asyncio_protocol.py"),
    Peer("asyncio-streams", "asyncio streams", ALL, "asyncio_streams.py"),
    Peer("uvloop-protocol", "uvloop Protocol", ALL, "uvloop_protocol.py"),
    Peer("selectors", "selectors loop", ALL, "selectors_server.py"),
    Peer("threads", "thread per conn", ALL, "threaded_server.py"),
    Peer("c-epoll", "C epoll (ceiling)", ("echo", "udp"), ceiling_only=True),
]
PEER_BY_KEY = {p.key: p for p in PEERS}


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    unit: str
    service: str
    args: tuple[str, ...] = ()
    metric: str = "ops_per_s"
    lower_is_better: bool = False
    ceiling_only: bool = False  # measured on the ceiling server only


def rr(conns: int, size: int, proto: str = "echo") -> tuple[str, ...]:
    return ("rr", "--proto", proto, "--conns", str(conns), "--size", str(size))


STREAM_ARGS = ("stream", "--conns", "4", "--size", "65536", "--window", "4")
#: Fixed rates for the CPU-cost workloads: below every compared server's top
#: rate here, so neither the server nor the generator is saturated and the
#: server's CPU time per operation compares servers whose top rates all meet
#: the generator's ceiling (rr50, stream).
RR_RATE = 40000  # requests/s over 50 connections
STREAM_RATE = 6000  # 64 KiB chunks/s over 4 connections (393 MB/s)
CONNECT_RATE = 4000  # connections/s over 8 slots, each one 64 B exchange
CONNECT_ARGS = ("connect", "--conns", "8", "--size", "64")
IDLE = Workload(
    "idle",
    "memory per idle connection",
    "KiB/conn",
    "echo",
    lower_is_better=True,
)
WORKLOADS = [
    Workload("rr1", "request/response, 1 conn × 64 B", "req/s", "echo", rr(1, 64)),
    Workload(
        "rr50", "request/response, 50 conns × 1 KiB", "req/s", "echo", rr(50, 1024)
    ),
    Workload(
        "stream",
        "streaming, 4 conns × 64 KiB writes",
        "MB/s",
        "echo",
        STREAM_ARGS,
        metric="mb_per_s",
    ),
    Workload(
        "connect",
        "connect + 64 B echo + close, 8 at a time",
        "conn/s",
        "echo",
        CONNECT_ARGS,
    ),
    Workload(
        "udp",
        "UDP 64 B datagrams, 32 outstanding",
        "datagrams/s",
        "udp",
        ("udp", "--size", "64", "--window", "32"),
    ),
    Workload(
        WILDCARD,
        "UDP 64 B datagrams, 32 outstanding, server on 0.0.0.0",
        "datagrams/s",
        WILDCARD,
        ("udp", "--size", "64", "--window", "32"),
    ),
    Workload(
        "rr50-cpu",
        f"server CPU per request at {RR_RATE:,} req/s, 50 conns × 1 KiB",
        "µs/req",
        "echo",
        (*rr(50, 1024), "--rate", str(RR_RATE)),
        metric="server_us_per_op",
        lower_is_better=True,
    ),
    Workload(
        "stream-cpu",
        f"server CPU per MB at {STREAM_RATE * 65536 / 1e6:,.0f} MB/s, "
        "4 conns × 64 KiB writes",
        "µs/MB",
        "echo",
        (*STREAM_ARGS, "--rate", str(STREAM_RATE)),
        metric="server_us_per_mb",
        lower_is_better=True,
    ),
    Workload(
        "connect-cpu",
        f"server CPU per connection at {CONNECT_RATE:,} conn/s, "
        "8 at a time, 64 B echo each",
        "µs/conn",
        "echo",
        (*CONNECT_ARGS, "--rate", str(CONNECT_RATE)),
        metric="server_us_per_op",
        lower_is_better=True,
    ),
    IDLE,
    Workload("upper1", "upper, 1 conn × 64 B", "req/s", "upper", rr(1, 64, "upper")),
    Workload(
        "upper50", "upper, 50 conns × 1 KiB", "req/s", "upper", rr(50, 1024, "upper")
    ),
    Workload(
        "welcome1",
        "welcome, 1 conn × 64 B lines",
        "req/s",
        "welcome",
        rr(1, 64, "welcome"),
    ),
    Workload(
        "welcome50",
        "welcome, 50 conns × 1 KiB lines",
        "req/s",
        "welcome",
        rr(50, 1024, "welcome"),
    ),
    Workload(
        "upper50-cpu",
        f"upper: server CPU per request at {RR_RATE:,} req/s, 50 conns × 1 KiB",
        "µs/req",
        "upper",
        (*rr(50, 1024, "upper"), "--rate", str(RR_RATE)),
        metric="server_us_per_op",
        lower_is_better=True,
    ),
    Workload(
        "welcome50-cpu",
        f"welcome: server CPU per request at {RR_RATE:,} req/s, 50 conns × 1 KiB lines",
        "µs/req",
        "welcome",
        (*rr(50, 1024, "welcome"), "--rate", str(RR_RATE)),
        metric="server_us_per_op",
        lower_is_better=True,
    ),
]
#: rr50 driven by benchmarks/pyclient.py instead of loadgen: why loadgen is C.
PYCLIENTS = [
    Workload(
        f"py-{loop}",
        f"rr50 driven by a Python client on {loop}",
        "req/s",
        "echo",
        ("--conns", "50", "--size", "1024", "--loop", loop),
        ceiling_only=True,
    )
    for loop in ("asyncio", "uvloop")
]
WORKLOADS += PYCLIENTS
WL_BY_KEY = {w.key: w for w in WORKLOADS}
ECHO_KEYS = ["rr1", "rr50", "stream", "connect", "udp"]
COST_KEYS = ["rr50-cpu", "stream-cpu", "connect-cpu"]
#: (text service workload, echo workload): a rate pair compares rates, a
#: CPU pair the echo's CPU per request with the text service's (the text
#: service's rate relative to echo's at the same CPU, when the generator's
#: ceiling caps the rates).
TEXT_PAIRS = [
    ("upper1", "rr1"),
    ("upper50", "rr50"),
    ("welcome1", "rr1"),
    ("welcome50", "rr50"),
    ("upper50-cpu", "rr50-cpu"),
    ("welcome50-cpu", "rr50-cpu"),
]
#: Every workload of the report, in its order.
REPORT_KEYS = ECHO_KEYS + COST_KEYS + ["idle"] + [t for t, _ in TEXT_PAIRS]


@dataclass
class Settings:
    rounds: int
    duration: float
    warmup: float
    idle_conns: int
    quiet_wait: float
    peers: list[str]
    workloads: list[str]
    out_dir: Path
    command: str
    retries: int = 0
    results: list[dict] = field(default_factory=list)


# ---- building and running ------------------------------------------------


#: How to get what the benchmark needs, by what is missing.
BENCH_INSTALL = "pip install -e '.[bench]'"
TOOL_PACKAGES = {"gcc": "gcc", "taskset": "util-linux", "prlimit": "util-linux"}


def missing_prerequisites(s: Settings) -> list[str]:
    """
    Everything this run needs that this machine lacks, each with how to get
    it, checked before the first measurement (a full run takes minutes).
    """
    import importlib.util
    import shutil

    missing = []
    for tool, package in TOOL_PACKAGES.items():
        if shutil.which(tool) is None:
            missing.append(f"the `{tool}` program: apt-get install {package}")
    cpus = os.sched_getaffinity(0)
    if not {int(SERVER_CPU), int(LOADGEN_CPU)} <= cpus:
        missing.append(
            f"CPUs {SERVER_CPU} and {LOADGEN_CPU} (server and load generator each "
            f"get one); this process may use {sorted(cpus)}"
        )
    modules = {"matplotlib": "the chart"}
    if "uvloop-protocol" in s.peers or "py-uvloop" in s.workloads:
        modules["uvloop"] = "the uvloop peer"
    if any(p.startswith("sockecho") for p in s.peers):
        modules["twisted_echo"] = "sockecho itself"
    for module, why in modules.items():
        if importlib.util.find_spec(module) is None:
            missing.append(f"the Python module `{module}` ({why}): {BENCH_INSTALL}")
    twistd = Path(sys.executable).parent / "twistd"
    if any(p.startswith("sockecho") for p in s.peers) and not twistd.exists():
        missing.append(f"{twistd} (sockecho is started with it): {BENCH_INSTALL}")
    return missing


def build() -> None:
    BUILD.mkdir(exist_ok=True)
    for source, binary in (
        (HERE / "loadgen.c", BUILD / "loadgen"),
        (PEERS_DIR / "c_echo.c", BUILD / "c_echo"),
    ):
        if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
            subprocess.run(
                ["gcc", "-O2", "-Wall", "-o", str(binary), str(source)], check=True
            )


def raise_nofile(needed: int) -> int:
    """Raise this process's open-files limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed
        except (ValueError, OSError):
            print(f"warning: open files limited to {hard}", file=sys.stderr)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def is_udp(service: str) -> bool:
    return service in ("udp", WILDCARD)


def free_port(kind: int, host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_ready(
    proc: subprocess.Popen,
    ports: dict[str, int],
    timeout: float,
    probe_timeout: float = 0.2,
) -> None:
    """Wait until every TCP service accepts and UDP echo answers (each UDP
    probe waits `probe_timeout` seconds for its answer)."""
    deadline = time.monotonic() + timeout
    todo = dict(ports)
    while todo:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not ready: {sorted(todo)}")
        for service, port in list(todo.items()):
            kind = socket.SOCK_DGRAM if is_udp(service) else socket.SOCK_STREAM
            with socket.socket(socket.AF_INET, kind) as s:
                s.settimeout(probe_timeout)
                try:
                    s.connect((HOST, port))
                    if is_udp(service):
                        s.send(b"ping")
                        s.recv(16)
                    del todo[service]
                except OSError:
                    pass
        time.sleep(0.05)


@contextmanager
def running(
    peer: Peer, nofile: int, log: Path, services: tuple[str, ...]
) -> Iterator[tuple[int, dict]]:
    """Start `peer` on CPU 0 with `services`; always stop it."""
    ports = {
        s: free_port(
            socket.SOCK_DGRAM if is_udp(s) else socket.SOCK_STREAM,
            WILDCARD_HOST if s == WILDCARD else HOST,
        )
        for s in services
    }
    cmd = [
        "prlimit",
        f"--nofile={nofile}:{nofile}",
        "taskset",
        "-c",
        SERVER_CPU,
        *peer.command(ports),
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(proc, ports, timeout=20)
        yield proc.pid, ports
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def loadgen(args: list[str]) -> list[str]:
    return ["taskset", "-c", LOADGEN_CPU, str(BUILD / "loadgen"), *args]


def cpu_ticks() -> tuple[int, int, int]:
    """(busy, total, steal) clock ticks of CPUs 0 and 1 together, from
    /proc/stat. Busy counts steal: time a virtual machine's hypervisor gave
    the CPU to another guest, which the server did not get either."""
    busy = total = steal = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name in ("cpu" + SERVER_CPU, "cpu" + LOADGEN_CPU):
            t = [int(x) for x in ticks[:8]]
            busy += sum(t) - t[3] - t[4]  # all but idle and iowait
            total += sum(t)
            steal += t[7]
    return busy, total, steal


def process_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def children_ticks() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (ru.ru_utime + ru.ru_stime) * os.sysconf("SC_CLK_TCK")


def wait_quiet(limit: float) -> float:
    """
    Wait (at most `limit` seconds) until CPUs 0 and 1 are mostly idle, as
    other people's jobs may share the machine; return the seconds waited.
    """
    start = time.monotonic()
    while True:
        before = cpu_ticks()
        time.sleep(0.25)
        after = cpu_ticks()
        busy, total = after[0] - before[0], after[1] - before[1]
        waited = time.monotonic() - start
        if not total or busy / total < QUIET or waited >= limit:
            return waited


def run_load(wl: Workload, port: int, pid: int, s: Settings) -> dict:
    """Run one loadgen measurement; also estimate what other processes used."""
    waited = wait_quiet(s.quiet_wait)
    args = ["--port", str(port), "--duration", str(s.duration)]
    args += ["--warmup", str(s.warmup), "--server-pid", str(pid)]
    before = cpu_ticks(), process_ticks(pid), children_ticks()
    if wl in PYCLIENTS:
        client = [sys.executable, str(HERE / "pyclient.py"), *wl.args, *args[:6]]
        cmd = ["taskset", "-c", LOADGEN_CPU, *client]
    else:
        cmd = loadgen([*wl.args, *args])
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=s.duration + s.warmup + 60,
    )
    after = cpu_ticks(), process_ticks(pid), children_ticks()
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or f"loadgen status {done.returncode}")
    result = json.loads(done.stdout)
    cpu = result.get("server_cpu")
    per_unit = (("server_us_per_op", "ops_per_s"), ("server_us_per_mb", "mb_per_s"))
    for name, per in per_unit:
        # Server CPU (µs) per request or per MB: the fixed-rate workloads.
        ok = cpu is not None and cpu > 0 and result[per]
        result[name] = cpu / result[per] * 1e6 if ok else None
    result["value"] = result[wl.metric]
    result["quiet_wait_s"] = round(waited, 2)
    ours = (after[1] - before[1]) + (after[2] - before[2])
    busy, total, steal = (a - b for a, b in zip(after[0], before[0], strict=True))
    # Share of the two CPUs' time used by anything but server and loadgen,
    # and the part of it the hypervisor took (steal).
    result["other_load"] = max(0.0, (busy - ours) / total) if total else None
    result["steal"] = steal / total if total else None
    return result


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def hold_idle(port: int, conns: int, timeout: float) -> tuple[dict, subprocess.Popen]:
    """Start loadgen holding `conns` idle connections; return its report."""
    cmd = loadgen(
        [
            "idle",
            "--port",
            str(port),
            "--conns",
            str(conns),
            "--size",
            "8",
            "--duration",
            "1",
            "--hold",
            str(timeout),
        ]
    )
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        proc.wait()
        raise RuntimeError("idle connections not ready in time")
    return json.loads(line), proc


def release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure_idle(port: int, pid: int, s: Settings) -> dict:
    """Server VmRSS growth per idle connection, after a 100-connection warm-up."""
    report, proc = hold_idle(port, 100, 30)
    release(proc)
    time.sleep(0.5)
    before = rss_kib(pid)
    report, proc = hold_idle(port, s.idle_conns, 120)
    try:
        time.sleep(0.3)
        after = rss_kib(pid)
    finally:
        release(proc)
    time.sleep(0.5)  # let the server close them before the next workload
    opened = report["ready"]
    return {
        "value": (after - before) / opened if opened else None,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "errors": s.idle_conns - opened,  # connections that did not open
        "mismatches": report["mismatches"],
        "setup_s": report["setup_s"],
    }


def round_order(items: list[str], rnd: int) -> list[str]:
    """The order of round `rnd` (from 1): as given, reversed in even rounds
    (A B C, C B A, A B C...), so that no peer always goes first or last."""
    return list(items) if rnd % 2 else list(reversed(items))


def run_peer(peer: Peer, rnd: int, s: Settings, nofile: int) -> None:
    wls = [WL_BY_KEY[k] for k in s.workloads if WL_BY_KEY[k].service in peer.services]
    if peer.ceiling_only:
        wls = [w for w in wls if w.key in ECHO_KEYS or w.ceiling_only]
    else:
        wls = [w for w in wls if not w.ceiling_only]
    # Every other round in the reverse order, so that no workload always runs
    # on a fresh server or after the same one (upper and welcome are compared
    # with echo, udp-wildcard with udp). Memory last: a thread-per-connection
    # server needs seconds of CPU to end 10,000 threads, which would spoil
    # whatever ran next on it.
    if rnd % 2 == 0:
        wls.reverse()
    wls.sort(key=lambda w: w is IDLE)
    log = BUILD / "logs" / f"{peer.key}.log"
    log.parent.mkdir(exist_ok=True)
    # Every service the peer has, but sockecho's wildcard UDP listener only
    # when a workload uses it: it listens on every address of the machine,
    # with the rate limits off.
    services = tuple(
        sv
        for sv in peer.services
        if sv != WILDCARD or any(w.service == WILDCARD for w in wls)
    )
    try:
        with running(peer, nofile, log, services) as (pid, ports):
            for wl in wls:
                run_one(peer, wl, rnd, s, pid, ports)
    except RuntimeError as e:  # the server did not start
        print(f"  round {rnd} {peer.key}: {e} (see {log})", flush=True)
        for wl in wls:
            s.results.append(
                {
                    "value": None,
                    "failure": str(e),
                    "round": rnd,
                    "peer": peer.key,
                    "workload": wl.key,
                }
            )


def run_one(
    peer: Peer, wl: Workload, rnd: int, s: Settings, pid: int, ports: dict[str, int]
) -> None:
    t = time.monotonic()
    try:
        if wl is IDLE:
            res = measure_idle(ports["echo"], pid, s)
        else:
            res = run_load(wl, ports[wl.service], pid, s)
            if (res["other_load"] or 0) > NOISY and s.retries > 0:
                # Other jobs took much of the CPUs: measure once more and keep
                # the quieter of the two (not the faster: no bias upwards).
                s.retries -= 1
                again = run_load(wl, ports[wl.service], pid, s)
                res = min(res, again, key=lambda r: r["other_load"] or 0)
                res["remeasured"] = True
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
        res = {"value": None, "failure": str(e)}
    res.update(round=rnd, peer=peer.key, workload=wl.key)
    s.results.append(res)
    value = res["value"]
    shown = "FAILED " + res["failure"] if value is None else f"{value:,.1f}"
    other = res.get("other_load")
    print(
        f"  round {rnd} {peer.key:17} {wl.key:10} {shown} {wl.unit}"
        + (f"  other load {other:.0%}" if other is not None else "")
        + (" (remeasured)" if res.get("remeasured") else "")
        + f"  ({time.monotonic() - t:.1f}s)",
        flush=True,
    )


# ---- machine description --------------------------------------------------


def machine() -> dict:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    versions = {}
    for module in ("twisted", "uvloop"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = "not installed"

    def out(*cmd: str) -> str:
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, cwd=ROOT
            ).stdout.strip()
        except OSError:
            return "?"

    dirty = out("git", "status", "--porcelain", "--", "twisted_echo")
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        **versions,
        "gcc": out("gcc", "-dumpfullversion"),
        "commit": out("git", "rev-parse", "--short", "HEAD")
        + (" (twisted_echo/ with uncommitted changes)" if dirty else ""),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "sockecho_flags": sockecho_unlimited(),
    }


# ---- summaries --------------------------------------------------------------


def median_of(runs: list[dict], name: str, sub: str | None = None) -> float | None:
    xs = [(r[name][sub] if sub else r[name]) for r in runs if name in r]
    xs = [x for x in xs if x is not None and x >= 0]
    return statistics.median(xs) if xs else None


def summarize(results: list[dict]) -> dict:
    """{(peer, workload): summary of the rounds}."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["peer"], r["workload"]), []).append(r)
    table = {}
    for key, runs in groups.items():
        ok = [r for r in runs if r["value"] is not None]
        values = [r["value"] for r in ok]

        table[key] = {
            "median": statistics.median(values) if values else None,
            "min": min(values, default=None),
            "max": max(values, default=None),
            "rounds": len(values),
            "failed": len(runs) - len(ok),
            "p50": median_of(ok, "lat_us", "p50"),
            "p99": median_of(ok, "lat_us", "p99"),
            "gen_cpu": median_of(ok, "gen_cpu"),
            "server_cpu": median_of(ok, "server_cpu"),
            "gen_work": median_of(ok, "gen_work"),
            "other_load": median_of(ok, "other_load"),
            "ops_per_s": median_of(ok, "ops_per_s"),
            "rate": median_of(ok, "rate"),
            "errors": sum(r.get("errors", 0) + r.get("lost", 0) for r in runs),
            "mismatches": sum(r.get("mismatches", 0) for r in runs),
        }
    return table


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def better_ratio(wl: Workload, a: float | None, b: float | None) -> float | None:
    """How many times better `a` is than `b` (>1: a is better)."""
    return ratio(b, a) if wl.lower_is_better else ratio(a, b)


# ---- report -------------------------------------------------------------------


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "–"
    if abs(x) >= 100 or digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def fx(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def chart(table: dict, peers: list[str], path: Path, idle_conns: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        "sockecho": "#d62728",
        "sockecho-json": "#e377c2",
        "twisted-wire": "#ff9896",
        "asyncio-protocol": "#1f77b4",
        "asyncio-streams": "#aec7e8",
        "uvloop-protocol": "#2ca02c",
        "selectors": "#9467bd",
        "threads": "#8c564b",
    }
    fig, (ax1, ax2) = plt.subplots(
        1, 2, figsize=(13, 6.5), gridspec_kw={"width_ratios": [3, 1.3]}
    )
    groups = [
        k
        for k in ECHO_KEYS + [k for k, _ in TEXT_PAIRS]
        if any((p, k) in table for p in peers) and not WL_BY_KEY[k].lower_is_better
    ]
    height = 0.8 / max(1, len(peers))
    for i, p in enumerate(peers):
        ys, xs, lo, hi = [], [], [], []
        for g, k in enumerate(groups):
            ref = table.get((REFERENCE, k), {}).get("median")
            row = table.get((p, k))
            if not row or row["median"] is None or not ref:
                continue
            ys.append(g + (i - (len(peers) - 1) / 2) * height)
            xs.append(row["median"] / ref)
            lo.append(xs[-1] - row["min"] / ref)
            hi.append(row["max"] / ref - xs[-1])
        ax1.barh(
            ys,
            xs,
            height=height * 0.95,
            xerr=[lo, hi],
            color=colors.get(p, "grey"),
            label=PEER_BY_KEY[p].label,
            error_kw={"elinewidth": 0.8, "capsize": 1.5},
        )
        if p == "sockecho":
            for y, x, h in zip(ys, xs, hi, strict=True):
                ax1.text(
                    x + h,
                    y,
                    f" {x:.2f}×",
                    va="center",
                    fontsize=7.5,
                    color=colors["sockecho"],
                    fontweight="bold",
                )
    ax1.axvline(1, color="black", linewidth=0.8)
    ax1.axhline(len(ECHO_KEYS) - 0.5, color="grey", linewidth=0.6, linestyle=":")
    ax1.set_yticks(range(len(groups)))
    ax1.set_yticklabels([WL_BY_KEY[k].title for k in groups], fontsize=8.5)
    ax1.invert_yaxis()
    ax1.set_xlabel(
        "throughput ÷ asyncio Protocol's (same run; bars: median, "
        "whiskers: min–max over rounds)"
    )
    ax1.set_title(
        "Throughput ÷ asyncio Protocol's, same run (longer is faster; "
        "sockecho's ratio printed)"
    )
    ax1.legend(fontsize=8, loc="lower right")
    ax1.grid(axis="x", alpha=0.3)
    mem = [
        (p, table[(p, "idle")])
        for p in peers
        if (p, "idle") in table and table[(p, "idle")]["median"] is not None
    ]
    ax2.barh(
        [PEER_BY_KEY[p].label for p, _ in mem],
        [r["median"] for _, r in mem],
        xerr=[
            [r["median"] - r["min"] for _, r in mem],
            [r["max"] - r["median"] for _, r in mem],
        ],
        color=[colors.get(p, "grey") for p, _ in mem],
    )
    for y, (_, r) in enumerate(mem):
        ax2.text(r["max"], y, f" {r['median']:.1f}", va="center", fontsize=8)
    ax2.invert_yaxis()
    ax2.set_xlabel("KiB of server RSS per idle connection")
    ax2.set_title(
        f"Memory per idle connection\n({idle_conns:,} open; shorter is leaner)"
    )
    ax2.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: Decimals shown per workload (0 for the others).
DIGITS = {
    "stream": 1,
    "idle": 1,
    "rr50-cpu": 1,
    "connect-cpu": 1,
    "upper50-cpu": 1,
    "welcome50-cpu": 1,
}


def problems(row: dict) -> str:
    bad = [(row["errors"], "errors"), (row["mismatches"], "mismatches")]
    bad += [(row["failed"], "failed rounds")]
    out = [f"{n} {what}" for n, what in bad if n]
    if short_of_rate(row):
        out.append(f"ran at {fmt(row['ops_per_s'])}/s, short of the fixed rate")
    return ", ".join(out) or "0"


def short_of_rate(row: dict) -> bool:
    """A fixed-rate point whose server could not keep up (its CPU was full)."""
    rate = row.get("rate")
    return bool(rate) and (row.get("ops_per_s") or 0) < 0.97 * rate


def result_rows(table: dict, peers: list[str], wl: Workload) -> list[str]:
    timed = wl is not IDLE
    head = ["server", f"median {wl.unit}", "min – max", "÷ asyncio Protocol"]
    head += ["÷ uvloop Protocol", "sockecho better by"]
    if timed:
        head += ["latency p50 / p99 µs", "server CPU", "loadgen CPU / busy"]
        head += ["other load"]
    head += ["errors"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    digits = DIGITS.get(wl.key, 0)
    mine = table.get(("sockecho", wl.key), {}).get("median")
    for p in peers:
        row = table.get((p, wl.key))
        if not row:
            continue
        m = row["median"]
        label = PEER_BY_KEY[p].label
        cells = [
            f"**{label}**" if p == "sockecho" else label,
            fmt(m, digits),
            f"{fmt(row['min'], digits)} – {fmt(row['max'], digits)}",
            fx(ratio(m, table.get((REFERENCE, wl.key), {}).get("median"))),
            fx(ratio(m, table.get(("uvloop-protocol", wl.key), {}).get("median"))),
            "" if p == "sockecho" else fx(better_ratio(wl, mine, m)),
        ]
        if timed:
            cells += [
                f"{fmt(row['p50'])} / {fmt(row['p99'])}",
                pct(row["server_cpu"]),
                f"{pct(row['gen_cpu'])} / {pct(row['gen_work'])}",
                pct(row["other_load"]),
            ]
        cells.append(problems(row))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def reading(table: dict, peers: list[str]) -> list[str]:
    """Sentences drawn from the numbers (regenerated with every run)."""
    out = []
    med = {k: v["median"] for k, v in table.items() if v["median"] is not None}
    for k in REPORT_KEYS:
        wl = WL_BY_KEY[k]
        ranked = [p for p in peers if (p, k) in med]
        if ("sockecho", k) not in med:
            continue
        ranked.sort(key=lambda p: med[(p, k)], reverse=not wl.lower_is_better)
        mine = med[("sockecho", k)]
        vs = [
            f"{PEER_BY_KEY[p].label} {fx(better_ratio(wl, mine, med[(p, k)]))}"
            for p in ranked
            if p != "sockecho"
        ]
        digits = DIGITS.get(k, 0)
        what = "sockecho ÷ peer"
        if wl.lower_is_better:
            what = "peer's " + ("memory" if k == "idle" else "CPU") + " ÷ sockecho's"
        out.append(
            f"- **{wl.title}**: sockecho {fmt(mine, digits)} {wl.unit}, rank "
            f"{ranked.index('sockecho') + 1} of {len(ranked)}; {what}: "
            + ", ".join(vs)
            + "."
        )
    for text, echo in TEXT_PAIRS:
        a, b = med.get(("sockecho", text)), med.get(("sockecho", echo))
        if a and b and WL_BY_KEY[text].lower_is_better:
            out.append(
                f"- sockecho's {WL_BY_KEY[text].title}: {fx(b / a)} of its echo's "
                f"rate at the same CPU ({WL_BY_KEY[echo].title} ÷ this)."
            )
        elif a and b:
            out.append(
                f"- sockecho's {WL_BY_KEY[text].title} runs at {fx(a / b)} "
                f"its own echo rate ({WL_BY_KEY[echo].title})."
            )
    busy = {
        k: table[("sockecho", k)]["gen_work"]
        for k in ECHO_KEYS
        if ("sockecho", k) in table and table[("sockecho", k)]["gen_work"] is not None
    }
    free = [k for k, b in busy.items() if b < 0.9]
    if free:
        out.append(
            "- While sockecho was measured on "
            + ", ".join(f"`{k}`" for k in free)
            + ", the load generator was busy at most "
            f"{pct(max(busy[k] for k in free))} of the time: it had headroom, and "
            "sockecho set those figures."
        )
    if len(free) < len(busy):
        out.append(
            "- On "
            + ", ".join(f"`{k}`" for k in busy if k not in free)
            + " the generator was 90% busy or more while driving sockecho: "
            "there sockecho is at least that fast"
            + (
                "; `rr50-cpu`, `stream-cpu` and `connect-cpu` compare the servers "
                "there by their "
                "CPU cost at a rate none of them saturates."
                if any(("sockecho", k) in med for k in COST_KEYS)
                else "."
            )
        )
    out += [
        "- 1-connection request/response is mostly a latency test: one request "
        "in flight, so the server is idle between requests and the figure is "
        "the round-trip time's inverse, wake-ups included.",
        "- On loopback the kernel's TCP work for a segment is done by whoever "
        "sends it, so client and server share the kernel's cost; the fastest "
        "servers end up close to the generator's ceiling (table above), and "
        "differences between them there are partly the generator's.",
        "- Ratios above 1× mean sockecho is better: higher throughput, or less "
        "memory per connection, or less CPU per request or MB. Ratios within "
        "the min–max spread of the rounds are not a difference.",
    ]
    return out


def ceiling_rows(table: dict, peers: list[str]) -> list[str]:
    lines = [
        "| workload | fastest Python server | its median | loadgen CPU / busy "
        "| loadgen vs C epoll server | loadgen CPU / busy | C ÷ fastest Python |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in ECHO_KEYS:
        wl = WL_BY_KEY[k]
        rows = [(p, table[(p, k)]) for p in peers if (p, k) in table]
        rows = [(p, r) for p, r in rows if r["median"] is not None]
        if not rows:
            continue
        p, best = max(rows, key=lambda pr: pr[1]["median"])
        c = table.get(("c-epoll", k), {})
        cm = c.get("median")
        digits = 1 if k == "stream" else 0

        def gen(row: dict) -> str:
            if not row:
                return "–"
            return f"{pct(row['gen_cpu'])} / {pct(row['gen_work'])}"

        lines.append(
            f"| {wl.title} | {PEER_BY_KEY[p].label} | {fmt(best['median'], digits)} "
            f"{wl.unit} | {gen(best)} | {fmt(cm, digits)} {wl.unit} | {gen(c)} | "
            f"{fx(ratio(cm, best['median']))} |"
        )
    return lines


def saturated_sentence(table: dict, peers: list[str]) -> str:
    hits = [
        f"{PEER_BY_KEY[p].label} on `{k}`"
        for k in ECHO_KEYS + [t for t, _ in TEXT_PAIRS]
        for p in peers
        if (table.get((p, k), {}).get("gen_work") or 0) >= 0.9
    ]
    if not hits:
        return "loadgen was below 90% busy on every Python server's point."
    return (
        "loadgen was 90% busy or more on these points, whose figures may be its "
        "limit as much as the server's (read them as *at least*): "
        + ", ".join(hits)
        + "."
    )


def python_client_sentence(table: dict, peers: list[str]) -> str:
    c = table.get(("c-epoll", "rr50"), {})
    runs = []
    for wl in PYCLIENTS:
        py = table.get(("c-epoll", wl.key), {})
        if py.get("median") and c.get("median"):
            loop = wl.args[-1]
            runs.append(
                f"on {loop} {fmt(py['median'])} req/s ({fmt(py['min'])} – "
                f"{fmt(py['max'])}, client at {pct(py['gen_cpu'])} CPU): loadgen "
                f"drives {fx(ratio(c['median'], py['median']))} as much"
            )
    if not runs:
        return ""
    slow = table.get(("c-epoll", PYCLIENTS[0].key), {}).get("median") or 0
    rates = [table.get((p, "rr50"), {}).get("median") for p in peers]
    rates = [r for r in rates if r]
    return (
        f"Measured: the same {WL_BY_KEY['rr50'].title} load sent to the C echo "
        "server by a Python client (`benchmarks/pyclient.py`, an asyncio "
        f"Protocol, pinned to CPU 1 like loadgen), against loadgen's "
        f"{fmt(c['median'])} req/s: "
        + "; ".join(runs)
        + f". The plain asyncio client's ceiling is below the rr50 rate of "
        f"{sum(r > slow for r in rates)} of the {len(rates)} Python servers. On "
        "uvloop a client comes closer, because on loopback most of the cost of "
        "a request is the kernel's, on both sides; loadgen still leads, and "
        "checks every byte and times every request."
    )


def cost_sentence(table: dict, peers: list[str]) -> str:
    """Server CPU time per request against the generator's, on rr50."""
    costs = []
    for p in peers:
        row = table.get((p, "rr50"), {})
        if row.get("median") and row.get("server_cpu") and row.get("gen_work"):
            costs.append(
                (row["server_cpu"] / row["median"], row["gen_work"] / row["median"], p)
            )
    if not costs:
        return ""
    server, gen, p = min(costs)
    return (
        f"Here, on {WL_BY_KEY['rr50'].title}, the cheapest Python server "
        f"({PEER_BY_KEY[p].label}) used {server * 1e6:.1f} µs of CPU per request "
        f"and loadgen was busy {gen * 1e6:.1f} µs per request. Even in C the "
        "client's share is large, because it is mostly kernel work (system calls "
        "and, on loopback, the TCP processing of every segment it sends): with "
        "one core per side, the fastest servers meet the generator's ceiling "
        "(see above)."
    )


def remeasured(results: list[dict]) -> str:
    n = sum(1 for r in results if r.get("remeasured"))
    timed = sum(1 for r in results if r["workload"] != "idle")
    return f"{n} of {timed}"


def busy_others(results: list[dict], q: float, key: str = "other_load") -> float | None:
    loads = sorted(r[key] for r in results if r.get(key) is not None)
    return loads[min(len(loads) - 1, int(q * len(loads)))] if loads else None


def steal_line(results: list[dict]) -> list[str]:
    """The hypervisor's share (steal) of the measured points' CPU time, when
    the results record it (runs since it was added)."""
    if busy_others(results, 1, "steal") is None:
        return []
    return [
        "- of that, time the hypervisor gave CPUs 0 and 1 to other virtual "
        f"machines (`steal` in `/proc/stat`): median "
        f"{pct(busy_others(results, 0.5, 'steal'))}, 90th percentile "
        f"{pct(busy_others(results, 0.9, 'steal'))}, worst "
        f"{pct(busy_others(results, 1, 'steal'))}"
    ]


def wildcard_section(results: list[dict], table: dict) -> list[str]:
    """
    sockecho's UDP echo on 0.0.0.0 against 127.0.0.1: medians, spread, and
    the ratio of the medians and of each round's pair (both points of a
    round are measured on the same server process, one after the other).
    """
    rows = [(k, table.get(("sockecho", k), {})) for k in ("udp", WILDCARD)]
    if not all(row.get("median") for _, row in rows):
        return []
    pairs: dict[int, dict[str, float]] = {}
    cpu: dict[str, list[float]] = {"udp": [], WILDCARD: []}
    for r in results:
        if r["peer"] == "sockecho" and r["workload"] in ("udp", WILDCARD):
            if r["value"]:
                pairs.setdefault(r["round"], {})[r["workload"]] = r["value"]
                if r.get("server_cpu"):
                    cpu[r["workload"]].append(r["server_cpu"] / r["value"] * 1e6)
    ratios = sorted(p[WILDCARD] / p["udp"] for p in pairs.values() if len(p) == 2)
    md = [
        "### UDP echo on the wildcard address (sockecho)",
        "",
        "Bound to 0.0.0.0, sockecho's UDP echo replies from the address each "
        "datagram was sent to: it reads with `recvmsg_into` and `IP_PKTINFO` and "
        "replies with `sendmsg` and a control message. Bound to 127.0.0.1 it reads "
        "with `recvfrom_into` and replies with `sendto`. Same load (loadgen sends "
        "to 127.0.0.1 either way), same server process, the two measured one "
        "after the other in each round (in turn first and second). Server CPU "
        "per datagram is its CPU time over the datagrams answered (median of "
        "the rounds); *other load* is the median share of CPUs 0 and 1 that "
        "other jobs used meanwhile (see Method).",
        "",
        "| listener | median datagrams/s | min | max | spread (max − min) ÷ median "
        "| server CPU µs/datagram | other load | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, row in rows:
        host = WILDCARD_HOST if key == WILDCARD else HOST
        spread = (row["max"] - row["min"]) / row["median"]
        per = statistics.median(cpu[key]) if cpu[key] else None
        md.append(
            f"| `{key}` ({host}) | {fmt(row['median'])} | {fmt(row['min'])} | "
            f"{fmt(row['max'])} | {spread:.1%} | {fmt(per, 2)} | "
            f"{pct(row['other_load'])} | {problems(row)} |"
        )
    ratio_text = fx(ratio(rows[1][1]["median"], rows[0][1]["median"]))
    md += [
        "",
        f"0.0.0.0 ÷ 127.0.0.1: {ratio_text} (ratio of the medians)"
        + (
            f"; per round {', '.join(f'{r:.3f}' for r in ratios)}"
            f" (median {statistics.median(ratios):.3f})."
            if ratios
            else "."
        ),
        "",
    ]
    return md


def render(data: dict, out_dir: Path) -> None:
    s, m, results = data["settings"], data["machine"], data["results"]
    table = summarize(results)
    peers = [p for p in s["peers"] if not PEER_BY_KEY[p].ceiling_only]
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "benchmarks.png"
    try:
        chart(table, peers, png, s["idle_conns"])
    except ImportError as e:  # the figures are still worth writing
        print(f"warning: no chart ({e}): pip install matplotlib", file=sys.stderr)
        png = None
    md = [
        "# sockecho benchmarks",
        "",
        f"Generated by `{s['command']}` on {data['date']}; the run took "
        f"{data['elapsed_s'] / 60:.1f} minutes. Regenerate with the same command "
        "(`--quick` for a short development run written under `benchmarks/build/`).",
        "",
        f"![throughput relative to asyncio Protocol, and memory per idle connection]"
        f"({png.name})"
        if png
        else "(No chart: matplotlib was not installed.)",
        "",
        "## Machine",
        "",
        f"- {m['nproc']} CPUs: {m['cpu']}; Linux {m['kernel']}",
        f"- Python {m['python']}, Twisted {m['twisted']}, uvloop {m['uvloop']}, "
        f"gcc {m['gcc']}",
        f"- sockecho at commit {m['commit']}",
        f"- load average when the run started: {' '.join(m['loadavg_start'])} "
        "(the machine is shared: other jobs may have used either CPU meanwhile; "
        "that is why every point is measured in several interleaved rounds)",
        f"- other processes' use of CPUs 0 and 1 during the measured points: "
        f"median {pct(busy_others(results, 0.5))}, worst {pct(busy_others(results, 1))}"
        " of the two CPUs' time",
        *steal_line(results),
        "",
        "## Method",
        "",
        f"- {s['rounds']} rounds. In each round every server is started alone "
        "(`prlimit --nofile`, `taskset -c 0`), measured on every workload it "
        "serves, and stopped, in the order "
        + ", ".join(PEER_BY_KEY[p].label for p in s["peers"])
        + " (odd rounds; even rounds in the reverse order, and each server's "
        "workloads too, so that no server or workload always goes first). "
        "Figures are the median over the rounds, with min and max; ratios "
        "are ratios of those medians.",
        f"- Each point: {s['warmup']} s warm-up, then {s['duration']} s measured. "
        "The server runs on CPU 0, the load generator on CPU 1; everything is on "
        "127.0.0.1. Before each point the runner waits (at most "
        f"{s['quiet_wait']} s) until the two CPUs are at most {QUIET:.0%} busy; "
        f"a point during which other jobs used more than {NOISY:.0%} of them is "
        "measured once more and the quieter of the two kept (for at most "
        f"{RETRY_SHARE:.0%} of the points; {remeasured(results)} this run).",
        "- sockecho is started as `twistd -n --pidfile= sockecho "
        + " ".join(m.get("sockecho_flags", []))
        + " --echo tcp:PORT:interface=127.0.0.1 --upper ... --welcome ... --udp "
        "udp:PORT:interface=127.0.0.1` (and, for the `udp-wildcard` workload "
        "only, `--udp udp:PORT:interface=0.0.0.0`): its safety limits "
        "(connections per "
        "address and in all, UDP datagrams per second) are switched off, since "
        "no peer has them and their defaults would cap these loads; everything "
        "else is at its defaults.",
        "- Load generator: `benchmarks/loadgen.c`, one thread, epoll, "
        "non-blocking sockets, compiled with `gcc -O2`. It polls without sleeping "
        "(`epoll_wait` with a zero timeout), so each reply is answered at once "
        "rather than after a wake-up of the generator; that is why its CPU share "
        "reads near 100%. Its *busy* share is the time spent handling events "
        "(after a poll that returned some): the rest is headroom.",
        "- Every byte of every reply is checked: echo must return the request, "
        "upper the upper-cased request (requests are lower-case ASCII), welcome "
        "must send its banner line, then `OK...<line>\\r\\n` for each line. A "
        "difference counts as a mismatch; a reset or early close as an error; a "
        "datagram unanswered after 200 ms as an error (lost).",
        "- Workloads: "
        + "; ".join(
            f"`{w.key}` {w.title} ({w.unit})" for w in WORKLOADS if not w.ceiling_only
        )
        + ".",
        "- `rr50-cpu`, `stream-cpu` and `connect-cpu` run the `rr50`, `stream` "
        "and `connect` loads at a fixed rate (`loadgen --rate`: each connection "
        "(or connection slot) starts a request, chunk or connection only at its "
        "turn, spread evenly), below every compared server's top rate, and "
        "report the server's CPU time per request, MB or connection "
        "(server CPU ÷ rate). Where several servers' top rates meet the "
        "generator's ceiling (see below), their top rates cannot tell them "
        "apart; their cost at the same, unsaturated rate can. A server that "
        "cannot keep up is flagged in the errors column.",
        "- Memory, measured last on each server: its VmRSS (`/proc/PID/status`) "
        "after a 100-connection warm-up, and again while "
        f"{s['idle_conns']:,} connections are open and idle; each has done one "
        "8-byte echo first, so the server has accepted it and built its protocol. "
        "The growth is divided by the number of connections. Kernel socket "
        "buffers are not in RSS.",
        "- CPU columns, as a share of one CPU over the measured seconds: *server* "
        "from `/proc/PID/stat` (all its threads); *loadgen* from `getrusage`; "
        "*other load*: what the rest of the machine used of CPUs 0 and 1 (from "
        "`/proc/stat`, minus the server and the generator, counting `steal`: time "
        "a virtual machine's hypervisor gave its CPUs to other guests), as other "
        "jobs share this machine. Loopback kernel work is charged partly to the "
        "sender, so these are approximate.",
        "- Peers (`benchmarks/peers/`): asyncio Protocol and streams, the very "
        "same Protocol code on uvloop, a single-thread `selectors` loop and a "
        "thread per connection (the classic tutorials' designs, with correct "
        "partial-send handling), Twisted's plain `twisted.protocols.wire.Echo` "
        "(with the Twisted docs' UDP echo), and sockecho via `twistd -n "
        "sockecho`. Twisted wire.Echo has no upper or welcome service. A minimal "
        "C epoll echo server is measured too, only for the generator's ceiling.",
        "",
        "## sockecho compared with each peer",
        "",
        "How many times better sockecho's median is than each peer's (higher "
        "throughput, or less memory or CPU); below 1× sockecho is worse.",
        "",
    ]
    head = ["workload"] + [PEER_BY_KEY[p].label for p in peers if p != "sockecho"]
    md += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in REPORT_KEYS:
        wl = WL_BY_KEY[k]
        mine = table.get(("sockecho", k), {}).get("median")
        if mine is None:
            continue
        cells = [
            fx(better_ratio(wl, mine, table.get((p, k), {}).get("median")))
            for p in peers
            if p != "sockecho"
        ]
        md.append(f"| {wl.title} | " + " | ".join(cells) + " |")
    md += ["", "## Results", ""]
    for k in REPORT_KEYS:
        wl = WL_BY_KEY[k]
        if any((p, k) in table for p in peers):
            md += [f"### {wl.title}", "", *result_rows(table, peers, wl), ""]
    md += wildcard_section(results, table)
    md += [
        "### upper and welcome against each server's own echo",
        "",
        "| server | "
        + " | ".join(
            WL_BY_KEY[t].title
            + (" (echo's CPU ÷ this)" if WL_BY_KEY[t].lower_is_better else " ÷ echo")
            for t, _ in TEXT_PAIRS
        )
        + " |",
        "|---|" + "---|" * len(TEXT_PAIRS),
    ]
    for p in peers:
        cells = [
            fx(
                better_ratio(
                    WL_BY_KEY[t],
                    table.get((p, t), {}).get("median"),
                    table.get((p, e), {}).get("median"),
                )
            )
            for t, e in TEXT_PAIRS
        ]
        if any(c != "–" for c in cells):
            md.append(f"| {PEER_BY_KEY[p].label} | " + " | ".join(cells) + " |")
    md += [
        "",
        "## Load generator ceiling",
        "",
        "The same load generator against a minimal C epoll echo server "
        "(`benchmarks/peers/c_echo.c`, same pinning, same rounds), next to the "
        "fastest Python server of each workload. The C server adds almost "
        "nothing to the kernel's work, so the higher of the two figures is about "
        "what one generator core can drive on this machine (a minimal C server "
        "is not always the faster of the two: uvloop's batching can win). Where "
        "a Python server gets that far, with loadgen near 100% busy, it has met "
        "the generator's ceiling: on loopback the kernel's per-request work is "
        "shared by the two sides and is most of the cost on both. Slower "
        "servers, and points where loadgen's busy share is well below 100%, were "
        "limited by the server.",
        "",
        *ceiling_rows(table, peers),
        "",
        saturated_sentence(table, peers),
        "",
        "## Reading",
        "",
        *reading(table, peers),
        "",
        "## Why the load generator is in C",
        "",
        "A Python server on one core is measured well only by a client that needs "
        "clearly less CPU per request than the server does; a Python client on "
        "the other core needs about as much, so it would measure itself. "
        + python_client_sentence(table, peers),
        "",
        cost_sentence(table, peers),
        "",
        "`loadgen.c` is one file, one thread, epoll and non-blocking sockets. "
        "Every load is bounded in time (warm-up + duration, plus a hard stop for "
        "idle connections) and in count (`--max-ops`, a fixed number of "
        "connections, 32 datagrams in flight).",
        "",
    ]
    kept = "\n\n".join(
        section
        for section in (
            counting.kept_section(out_dir / "benchmarks.md", "websocket"),
            counting.kept_section(out_dir / "benchmarks.md"),
        )
        if section
    )
    (out_dir / "benchmarks.md").write_text(
        "\n".join(md) + (f"\n{kept}\n" if kept else "")
    )
    print(f"wrote {out_dir / 'benchmarks.md'}" + (f" and {png}" if png else ""))


# ---- counting mode (--count) ------------------------------------------------
#
# Instructions (cachegrind) and system calls (strace) per operation: see
# benchmarks/counting.py for the method and benchmarks/README.md for its use.

#: The peers counted, and the loads each is counted on by default.
COUNT_PEERS = {
    "sockecho": PEER_BY_KEY["sockecho"],
    # sockecho logging warnings only: its per-connection cost without the
    # info lines written as each connection opens and closes.
    "sockecho-warn": Peer(
        "sockecho-warn",
        "sockecho, --log-level warn",
        ("echo",),
        options=("--log-level=warn",),
    ),
    # sockecho logging JSON (the connection records in the log too).
    "sockecho-json": PEER_BY_KEY["sockecho-json"],
    # sockecho keeping no connection records (--records 0): what the
    # records cost per connection, next to the default's.
    "sockecho-norecords": Peer(
        "sockecho-norecords",
        "sockecho, --records 0",
        ("echo",),
        options=("--records=0",),
    ),
    # sockecho recording UDP peer flows (--udp-flows, off by default): what
    # the flows cost per datagram, next to the default's.
    "sockecho-flows": Peer(
        "sockecho-flows",
        "sockecho, --udp-flows 4096",
        ("udp",),
        options=("--udp-flows=4096",),
    ),
    "asyncio-protocol": PEER_BY_KEY["asyncio-protocol"],
    "uvloop-protocol": PEER_BY_KEY["uvloop-protocol"],
}
COUNT_DEFAULT_LOADS = {
    "sockecho-warn": ("connect",),
    "sockecho-json": ("connect",),
    "sockecho-norecords": ("connect",),
    "sockecho-flows": ("udp",),
}
COUNT_TOOLS = {"instructions": "valgrind", "syscalls": "strace"}


def counted_command(
    tool: str, peer: Peer, ports: dict[str, int], out: Path
) -> list[str]:
    """`peer` serving only `ports`, on CPU 0, under cachegrind or strace."""
    cmd = peer.command(ports)
    if peer.key.startswith("sockecho"):
        # the script through the interpreter: valgrind follows no #! line; and
        # no other listener, each of which would otherwise take its default
        cmd = [sys.executable, *cmd, *(f"--no-{sv}" for sv in ALL if sv not in ports)]
    if tool == "instructions":
        wrap = [*counting.CACHEGRIND, f"--cachegrind-out-file={out}"]
    else:
        wrap = ["strace", "-f", "-c", "-o", str(out), "--"]
    return ["taskset", "-c", SERVER_CPU, *wrap, *cmd]


def server_pid(proc: subprocess.Popen, tool: str) -> int:
    """The server's pid: valgrind runs its guest in its own process, strace in
    a child."""
    if tool == "instructions":
        return proc.pid
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"strace has {len(children)} children, not 1")
    return int(children[0])


def count_once(tool: str, peer: Peer, load: counting.CountLoad, n: int) -> dict:
    """Run `peer` under `tool` serving `n` operations of `load`, then stop it;
    return its whole count (instructions, or calls per system call) and the
    load generator's report."""
    kind = socket.SOCK_DGRAM if is_udp(load.service) else socket.SOCK_STREAM
    ports = {load.service: free_port(kind)}
    out = BUILD / "counts" / f"{tool}-{peer.key}-{load.key}-{n}.out"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    log = BUILD / "logs" / f"count-{peer.key}.log"
    log.parent.mkdir(exist_ok=True)
    with log.open("ab") as logf:
        proc = subprocess.Popen(
            counted_command(tool, peer, ports, out),
            cwd=ROOT,
            # the same start-up in both runs: with random str hashes its cost
            # moves by about 1 % (13 M instructions for sockecho), as much as
            # hundreds of requests
            env={**os.environ, "PYTHONHASHSEED": "0"},
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(proc, ports, timeout=240, probe_timeout=5)
        seconds = n / load.rate
        args = [*load.args, "--port", str(ports[load.service]), "--warmup", "0"]
        args += ["--duration", f"{seconds * 4 + 30:.0f}", "--max-ops", str(n)]
        done = subprocess.run(
            loadgen(args), capture_output=True, text=True, timeout=seconds * 4 + 90
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip() or f"loadgen {done.returncode}")
        report = json.loads(done.stdout)
        if report["ops"] < n or report["errors"] or report["mismatches"]:
            raise RuntimeError(f"load not served in full: {done.stdout.strip()}")
        os.kill(server_pid(proc, tool), signal.SIGTERM)
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.read_text()
    count: int | dict[str, int]
    if tool == "instructions":
        count = counting.parse_cachegrind(text)
    else:
        count = counting.parse_strace_summary(text)
    return {"count": count, "ops": report["ops"], "loadgen": report}


def count_pair(tool: str, peer: Peer, load: counting.CountLoad) -> dict:
    """The count per operation of `load` on `peer`: (N2 - N1) method."""
    one = count_once(tool, peer, load, load.n1)
    two = count_once(tool, peer, load, load.n2)
    res: dict = {
        "ops": [one["ops"], two["ops"]],
        "lost": [one["loadgen"]["lost"], two["loadgen"]["lost"]],
    }
    if tool == "instructions":
        res["counts"] = [one["count"], two["count"]]
        res["value"] = counting.per_op(
            one["count"], one["ops"], two["count"], two["ops"]
        )
    else:
        calls = counting.per_op_calls(
            one["count"], one["ops"], two["count"], two["ops"]
        )
        res["totals"] = [one["count"]["total"], two["count"]["total"]]
        res["value"] = calls["total"]
        res["calls"] = calls
    return res


def run_counts(a: argparse.Namespace, ap: argparse.ArgumentParser) -> None:
    """The counting mode: every (repeat, peer, load, tool), then the report."""
    peers = a.peers.split(",") if a.peers else list(COUNT_PEERS)
    loads = a.workloads.split(",") if a.workloads else None
    tools = a.count_tools.split(",")
    for name, given, known in (
        ("peer", peers, COUNT_PEERS),
        ("load", loads or [], counting.COUNT_BY_KEY),
        ("count", tools, COUNT_TOOLS),
    ):
        bad = [x for x in given if x not in known]
        if bad:
            ap.error(f"unknown {name} for --count: {', '.join(bad)}")
    missing = counting.missing_tools(COUNT_TOOLS[t] for t in tools)
    for tool in ("gcc", "taskset"):
        if shutil.which(tool) is None:
            missing.append(
                f"the `{tool}` program: apt-get install {TOOL_PACKAGES[tool]}"
            )
    if "uvloop-protocol" in peers and importlib.util.find_spec("uvloop") is None:
        missing.append(f"the Python module `uvloop` (the uvloop peer): {BENCH_INSTALL}")
    if not {int(SERVER_CPU), int(LOADGEN_CPU)} <= os.sched_getaffinity(0):
        missing.append(f"CPUs {SERVER_CPU} and {LOADGEN_CPU}")
    if missing:
        sys.exit(
            "benchmarks/run.py --count cannot run here; missing:\n"
            + "\n".join(f"  - {m}" for m in missing)
        )
    build()
    started, results = time.monotonic(), []
    for rep in range(1, a.repeat + 1):
        for key in round_order(peers, rep):
            peer = COUNT_PEERS[key]
            mine = loads or COUNT_DEFAULT_LOADS.get(key) or list(counting.COUNT_BY_KEY)
            for load_key in mine:
                load = counting.COUNT_BY_KEY[load_key]
                if load.service not in peer.services:
                    continue
                for tool in tools:
                    t = time.monotonic()
                    try:
                        res = count_pair(tool, peer, load)
                    except (RuntimeError, ValueError, OSError,
                            subprocess.TimeoutExpired) as e:  # fmt: skip
                        res = {"value": None, "failure": str(e)}
                    res.update(repeat=rep, peer=key, load=load_key, tool=tool)
                    results.append(res)
                    shown = (
                        "FAILED " + res["failure"]
                        if res["value"] is None
                        else f"{res['value']:,.2f} per {load.unit}"
                    )
                    print(
                        f"  repeat {rep} {key:17} {load_key:8} {tool:12} {shown}"
                        f"  ({time.monotonic() - t:.0f}s)",
                        flush=True,
                    )
    data = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
        "commit": sockecho_commit(),
        "elapsed_s": time.monotonic() - started,
        "versions": versions(),
        "results": results,
    }
    BUILD.mkdir(exist_ok=True)
    (BUILD / "counts.json").write_text(json.dumps(data, indent=1))
    out = (a.out_dir or ROOT / "docs") / "benchmarks.md"
    counting.write_section(out, count_section(data))
    print(f"wrote {BUILD / 'counts.json'} and the counts section of {out}")


def sockecho_commit() -> str:
    """The last commit that changed twisted_echo/ (what the counts measure)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()

    commit = git("log", "-1", "--format=%h", "--", "twisted_echo")
    if git("status", "--porcelain", "--", "twisted_echo"):
        commit += " (twisted_echo/ with uncommitted changes)"
    return commit


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for module in ("twisted", "uvloop"):
        try:
            found[module] = __import__(module).__version__
        except ImportError:
            found[module] = "not installed"
    for tool, flag in (("valgrind", "--version"), ("strace", "-V")):
        try:
            shown = subprocess.run([tool, flag], capture_output=True, text=True)
            found[tool] = shown.stdout.splitlines()[0].strip()
        except (OSError, IndexError):
            found[tool] = "not installed"
    return found


def count_section(data: dict) -> list[str]:
    """The counting report: one table per count, peers across, loads down."""
    results = [r for r in data["results"] if r["value"] is not None]
    peers = [p for p in COUNT_PEERS if any(r["peer"] == p for r in results)]
    loads = [
        c for c in counting.COUNT_LOADS if any(r["load"] == c.key for r in results)
    ]
    v = data["versions"]
    md = [
        "## Counted costs per operation",
        "",
        f"Generated by `{data['command']}` on {data['date']}, sockecho at commit "
        f"{data['commit']} (the last commit that changed `twisted_echo/`); "
        f"Python {v['python']}, Twisted {v['twisted']}, uvloop {v['uvloop']}, "
        f"{v['valgrind']}, {v['strace']}.",
        "",
        "What the server does per operation, counted rather than timed, at a "
        "paced rate with one operation in flight (so that no server batches): "
        "user-space instructions (`Ir` of `valgrind --tool=cachegrind "
        "--cache-sim=no`) and system calls (`strace -c -f`), each as (count at "
        "N2 − count at N1) ÷ (N2 − N1) over two runs of the server from start "
        "to exit, so that start-up and shut-down cancel. Each cell gives every "
        "repeat, then their spread ((max − min) ÷ mean). See "
        "benchmarks/README.md, *Counting mode*.",
        "",
    ]
    for tool, title in (
        ("instructions", "User-space instructions per operation"),
        ("syscalls", "System calls per operation"),
    ):
        if not any(r["tool"] == tool for r in results):
            continue
        md += [
            f"### {title}",
            "",
            "| load | N1, N2 | "
            + " | ".join(COUNT_PEERS[p].label for p in peers)
            + " |",
            "|---|---|" + "---|" * len(peers),
        ]
        for load in loads:
            cells = [
                counting.cell(
                    [
                        r["value"]
                        for r in results
                        if (r["tool"], r["peer"], r["load"]) == (tool, p, load.key)
                    ]
                )
                for p in peers
            ]
            if all(c == "–" for c in cells):
                continue
            md.append(
                f"| {load.title} (per {load.unit}) | {load.n1}, {load.n2} | "
                + " | ".join(cells)
                + " |"
            )
        md.append("")
    calls = [r for r in results if r["tool"] == "syscalls" and r["repeat"] == 1]
    if calls:
        md += ["System calls per operation by name (first repeat):", ""]
        for r in calls:
            md.append(
                f"- {COUNT_PEERS[r['peer']].label}, {r['load']}: "
                + counting.top_calls(r["calls"])
            )
        md.append("")
    failed = [r for r in data["results"] if r["value"] is None]
    for r in failed:
        md.append(f"- not counted: {r['peer']} {r['load']} {r['tool']}: {r['failure']}")
    return md


# ---- main -----------------------------------------------------------------------


# ---- WebSocket mode (--websocket) -------------------------------------------
#
# WebSocket echo servers under the `ws` workloads: sockecho's --websocket, the
# `websockets` library's asyncio server and aiohttp's. The load generator is
# `sockecho-client load ws://...` (Python, Twisted and wsproto) pinned to CPU
# 1: loadgen.c speaks no WebSocket. Its own CPU share is reported, so that a
# rate capped by the client is seen as such; the fixed-rate workload's server
# CPU per message does not depend on the client's speed.

#: Concurrent connections of the WebSocket workloads, and each message's size.
WS_CONNS, WS_SIZE = 100, 1024
#: The fixed rate of `ws-cpu` (messages/s over all connections): below every
#: compared server's top rate, and the client's.
WS_RATE = 2000
WS_PEERS = [
    Peer(
        "sockecho",
        "sockecho",
        ("websocket",),
        options=("--no-echo", "--no-upper", "--no-welcome", "--no-udp"),
    ),
    Peer("websockets", "websockets (asyncio)", ("websocket",), "websockets_echo.py"),
    Peer("aiohttp", "aiohttp", ("websocket",), "aiohttp_echo.py"),
]
WS_PEER_BY_KEY = {p.key: p for p in WS_PEERS}
WS_MODULES = {"websockets": "websockets", "aiohttp": "aiohttp"}
WS_WORKLOADS = {
    "ws": Workload(
        "ws",
        f"WebSocket, {WS_CONNS} conns × {WS_SIZE} B binary messages, closed loop",
        "msg/s",
        "websocket",
        ("-c", str(WS_CONNS), "-s", str(WS_SIZE)),
    ),
    "ws-cpu": Workload(
        "ws-cpu",
        f"WebSocket: server CPU per message at {WS_RATE:,} msg/s, "
        f"{WS_CONNS} conns × {WS_SIZE} B",
        "µs/msg",
        "websocket",
        ("-c", str(WS_CONNS), "-s", str(WS_SIZE), "--rate", str(WS_RATE)),
        metric="server_us_per_op",
        lower_is_better=True,
    ),
}


def ws_client(wl: Workload, port: int, seconds: float) -> list[str]:
    """The pinned `sockecho-client load` command of `wl` for `seconds`."""
    return [
        "taskset",
        "-c",
        LOADGEN_CPU,
        sys.executable,
        "-m",
        "twisted_echo.client",
        "load",
        f"ws://{HOST}:{port}/",
        *wl.args,
        "-d",
        str(seconds),
        "--timeout",
        "10",
        "--json",
    ]


def ws_load(wl: Workload, port: int, pid: int, s: Settings) -> dict:
    """One WebSocket point: a warm-up run, then the measured run."""
    warm = subprocess.run(
        ws_client(wl, port, s.warmup), capture_output=True, text=True, timeout=60
    )
    if warm.returncode != 0:
        raise RuntimeError(warm.stderr.strip() or warm.stdout.strip()[-300:])
    waited = wait_quiet(s.quiet_wait)
    before = cpu_ticks(), process_ticks(pid), children_ticks()
    done = subprocess.run(
        ws_client(wl, port, s.duration),
        capture_output=True,
        text=True,
        timeout=s.duration + 60,
    )
    after = cpu_ticks(), process_ticks(pid), children_ticks()
    if done.returncode != 0 and not done.stdout.strip():
        raise RuntimeError(done.stderr.strip() or f"client status {done.returncode}")
    report = json.loads(done.stdout)
    # Shares of the load's timed part (the client's start-up, handshakes and
    # closes are counted in the CPU but not in this time: a small overstatement).
    span = report["elapsed_s"] or s.duration
    tick = os.sysconf("SC_CLK_TCK")
    server_s = (after[1] - before[1]) / tick
    client_s = (after[2] - before[2]) / tick
    messages = report["requests"]
    busy, total, _steal = (a - b for a, b in zip(after[0], before[0], strict=True))
    ours = (after[1] - before[1]) + (after[2] - before[2])
    result = {
        "ops_per_s": report["requests_per_s"],
        "p50_us": report["latency_us"]["p50"],
        "p99_us": report["latency_us"]["p99"],
        "messages": messages,
        "errors": report["errors"] + report["mismatches"],
        "lost_bytes": report["lost_bytes"],
        "ok": report["ok"],
        "server_us_per_op": server_s / messages * 1e6 if messages else None,
        "server_cpu_share": server_s / span,
        "client_cpu_share": client_s / span,
        "rss_kib": rss_kib(pid),
        "quiet_wait_s": round(waited, 2),
        "other_load": max(0.0, (busy - ours) / total) if total else None,
    }
    result["value"] = result[wl.metric]
    return result


def run_websocket(a: argparse.Namespace, ap: argparse.ArgumentParser) -> None:
    """The WebSocket mode: every (round, peer, workload), then its section."""
    peers = a.peers.split(",") if a.peers else list(WS_PEER_BY_KEY)
    workloads = a.workloads.split(",") if a.workloads else list(WS_WORKLOADS)
    for name, given, known in (
        ("peer", peers, WS_PEER_BY_KEY),
        ("workload", workloads, WS_WORKLOADS),
    ):
        bad = [x for x in given if x not in known]
        if bad:
            ap.error(f"unknown {name} for --websocket: {', '.join(bad)}")
    if a.render:
        data = json.loads(a.render.read_text())
        out = (a.out_dir or ROOT / "docs") / "benchmarks.md"
        counting.write_section(out, websocket_section(data), "websocket")
        print(f"wrote the WebSocket section of {out}")
        return
    if a.quick:
        a.rounds, a.duration, a.warmup = 1, 1.5, 0.3
    missing = [
        f"the `{tool}` program: apt-get install {TOOL_PACKAGES[tool]}"
        for tool in ("taskset", "prlimit")
        if shutil.which(tool) is None
    ]
    for key in peers:
        module = WS_MODULES.get(key)
        if module and importlib.util.find_spec(module) is None:
            missing.append(f"the Python module `{module}` (its peer): {BENCH_INSTALL}")
    if not {int(SERVER_CPU), int(LOADGEN_CPU)} <= os.sched_getaffinity(0):
        missing.append(f"CPUs {SERVER_CPU} and {LOADGEN_CPU}")
    if missing:
        sys.exit(
            "benchmarks/run.py --websocket cannot run here; missing:\n"
            + "\n".join(f"  - {m}" for m in missing)
        )
    s = Settings(
        a.rounds, a.duration, a.warmup, 0, a.quiet_wait, peers, workloads,
        a.out_dir or ROOT / "docs",
        "python benchmarks/run.py " + " ".join(sys.argv[1:]),
    )  # fmt: skip
    nofile = raise_nofile(4 * WS_CONNS + 1024)
    BUILD.mkdir(exist_ok=True)
    (BUILD / "logs").mkdir(exist_ok=True)
    started = time.monotonic()
    for rnd in range(1, s.rounds + 1):
        for key in round_order(peers, rnd):
            peer = WS_PEER_BY_KEY[key]
            log = BUILD / "logs" / f"ws-{key}.log"
            with running(peer, nofile, log, ("websocket",)) as (pid, ports):
                for wk in round_order(workloads, rnd):
                    wl = WS_WORKLOADS[wk]
                    t = time.monotonic()
                    try:
                        res = ws_load(wl, ports["websocket"], pid, s)
                    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                        res = {"value": None, "failure": str(e)}
                    res.update(round=rnd, peer=key, workload=wk)
                    s.results.append(res)
                    shown = (
                        "FAILED " + res["failure"]
                        if res["value"] is None
                        else f"{res['value']:,.1f} {wl.unit}"
                    )
                    print(
                        f"  round {rnd} {key:12} {wk:7} {shown}"
                        f"  ({time.monotonic() - t:.1f}s)",
                        flush=True,
                    )
    data = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": s.command.strip(),
        "commit": sockecho_commit(),
        "elapsed_s": time.monotonic() - started,
        "machine": machine(),
        "versions": ws_versions(),
        "settings": {"rounds": s.rounds, "duration": s.duration, "warmup": s.warmup},
        "results": s.results,
    }
    (BUILD / "websocket.json").write_text(json.dumps(data, indent=1))
    out = s.out_dir / "benchmarks.md"
    counting.write_section(out, websocket_section(data), "websocket")
    print(f"wrote {BUILD / 'websocket.json'} and the WebSocket section of {out}")


def ws_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for module in ("twisted", "wsproto", "websockets", "aiohttp"):
        try:
            found[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            found[module] = "not installed"
    return found


def websocket_section(data: dict) -> list[str]:
    """The WebSocket report: one row per peer, medians over the rounds."""
    results = data["results"]
    v, st = data["versions"], data["settings"]
    peers = [p.key for p in WS_PEERS if any(r["peer"] == p.key for r in results)]

    def med(peer: str, wk: str, field: str) -> float | None:
        vals = [
            r[field]
            for r in results
            if r["peer"] == peer and r["workload"] == wk and r.get(field) is not None
        ]
        return statistics.median(vals) if vals else None

    def spread(peer: str, wk: str) -> str:
        vals = [
            r["value"]
            for r in results
            if r["peer"] == peer and r["workload"] == wk and r["value"] is not None
        ]
        if len(vals) < 2:
            return ""
        return f" ({fmt(min(vals))}–{fmt(max(vals))})"

    def failures(peer: str) -> str:
        bad = [r for r in results if r["peer"] == peer]
        errors = sum(r.get("errors", 0) + (r.get("lost_bytes", 0) > 0) for r in bad)
        failed = sum(r["value"] is None for r in bad)
        return f"{errors} errors" + (f", {failed} points failed" if failed else "")

    ws = WS_WORKLOADS["ws"]
    rows = [
        "| server | msg/s, closed loop | p50 µs | p99 µs | server CPU | client CPU "
        f"| others' CPU | server µs/msg at {WS_RATE:,} msg/s | p99 µs there "
        "| RSS MiB | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key in peers:
        rss = med(key, "ws", "rss_kib")
        rows.append(
            f"| {WS_PEER_BY_KEY[key].label} "
            f"| {fmt(med(key, 'ws', 'value'))}{spread(key, 'ws')} "
            f"| {fmt(med(key, 'ws', 'p50_us'))} | {fmt(med(key, 'ws', 'p99_us'))} "
            f"| {pct(med(key, 'ws', 'server_cpu_share'))} "
            f"| {pct(med(key, 'ws', 'client_cpu_share'))} "
            f"| {pct(med(key, 'ws', 'other_load'))} "
            f"| {fmt(med(key, 'ws-cpu', 'value'), 1)}{spread(key, 'ws-cpu')} "
            f"| {fmt(med(key, 'ws-cpu', 'p99_us'))} "
            f"| {fmt(rss / 1024 if rss else None, 1)} | {failures(key)} |"
        )
    return [
        "## WebSocket echo",
        "",
        f"Generated by `{data['command']}` on {data['date']} (sockecho at "
        f"{data['commit']}; Python {v['python']}, Twisted {v['twisted']}, wsproto "
        f"{v['wsproto']}, websockets {v['websockets']}, aiohttp {v['aiohttp']}); "
        f"{st['rounds']} round(s) of {st['warmup']} s warm-up and {st['duration']} s "
        "measured per point, medians (min–max over the rounds when more than "
        "one). Regenerate with the same command; `pip install -e '.[bench]'` "
        "brings websockets and aiohttp.",
        "",
        f"- `ws`: {ws.title}: every connection sends a message, waits for its "
        "echo (checked byte for byte) and sends the next. `ws-cpu`: the same "
        f"paced at {WS_RATE:,} messages/s over all connections, the server's "
        "CPU time (user + system, from /proc) divided by the messages echoed.",
        "- Servers on CPU 0 (`taskset`), each alone: sockecho as `twistd -n "
        "sockecho --no-echo --no-upper --no-welcome --no-udp --websocket "
        "tcp:PORT:interface=127.0.0.1` with its connection limits off; "
        "`benchmarks/peers/websockets_echo.py` (the `websockets` library's "
        "asyncio server); `benchmarks/peers/aiohttp_echo.py` (aiohttp's "
        "`WebSocketResponse`). Each keeps its defaults otherwise; the client "
        "asks for no compression.",
        "- Client on CPU 1: `sockecho-client load ws://127.0.0.1:PORT/ "
        + " ".join(ws.args)
        + " -d SECONDS --json` (Twisted and wsproto, one process). Its CPU "
        "share is in the table: near 100 % it, not the server, caps the "
        "closed-loop rate, and the rates compare the servers only where the "
        "server's share is near 100 % instead. The CPU per message at a fixed "
        "rate compares the servers whatever the client's speed. CPU shares "
        "are of one CPU over the timed part; *others' CPU* is the share of "
        "CPUs 0 and 1 used meanwhile by other processes (the machine is "
        "shared): where it is high, the rates and latencies say more about "
        "the machine than about the servers.",
        "",
        *rows,
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=2.5, help="seconds per point")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds before each")
    ap.add_argument("--idle-conns", type=int, default=10000)
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=1.0,
        help="at most this many seconds to wait for idle CPUs before each point",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="1 round, 1.5 s per point, report under benchmarks/build/",
    )
    ap.add_argument(
        "--peers",
        help="comma-separated, from: "
        + ", ".join(PEER_BY_KEY)
        + " (default: all); with --count from: "
        + ", ".join(COUNT_PEERS),
    )
    ap.add_argument(
        "--workloads",
        help="comma-separated, from: "
        + ", ".join(WL_BY_KEY)
        + " (default: all); with --count from: "
        + ", ".join(counting.COUNT_BY_KEY),
    )
    ap.add_argument("--out-dir", type=Path, help="where benchmarks.md/png go")
    ap.add_argument("--render", type=Path, help="only redraw from a results.json")
    ap.add_argument(
        "--count",
        action="store_true",
        help="count instructions (cachegrind) and system calls (strace) per "
        "operation instead of timing; writes the counts section of benchmarks.md",
    )
    ap.add_argument(
        "--websocket",
        action="store_true",
        help="the WebSocket workloads (ws, ws-cpu) against the WebSocket peers "
        "(sockecho, websockets, aiohttp); writes the WebSocket section of "
        "benchmarks.md",
    )
    ap.add_argument(
        "--count-tools",
        default=",".join(COUNT_TOOLS),
        help="with --count, comma-separated, from: " + ", ".join(COUNT_TOOLS),
    )
    ap.add_argument(
        "--repeat", type=int, default=2, help="with --count, runs of every count"
    )
    a = ap.parse_args()
    if a.count:
        run_counts(a, ap)
        return
    if a.websocket:
        run_websocket(a, ap)
        return
    a.peers = a.peers or ",".join(p.key for p in PEERS)
    a.workloads = a.workloads or ",".join(WL_BY_KEY)
    if a.render:
        render(json.loads(a.render.read_text()), a.out_dir or ROOT / "docs")
        return
    if a.quick:
        a.rounds, a.duration, a.warmup = 1, 1.5, 0.3
    for name, given, known in (
        ("peer", a.peers, PEER_BY_KEY),
        ("workload", a.workloads, WL_BY_KEY),
    ):
        bad = [x for x in given.split(",") if x not in known]
        if bad:
            ap.error(f"unknown {name}: {', '.join(bad)}")
    s = Settings(
        a.rounds,
        a.duration,
        a.warmup,
        a.idle_conns,
        a.quiet_wait,
        a.peers.split(","),
        a.workloads.split(","),
        a.out_dir or (BUILD if a.quick else ROOT / "docs"),
        "python benchmarks/run.py " + " ".join(sys.argv[1:]),
    )
    points = sum(
        len([w for w in s.workloads if WL_BY_KEY[w].service in PEER_BY_KEY[p].services])
        for p in s.peers
    )
    s.retries = int(RETRY_SHARE * points * s.rounds)
    missing = missing_prerequisites(s)
    if missing:
        sys.exit(
            "benchmarks/run.py cannot run here; missing:\n"
            + "\n".join(f"  - {m}" for m in missing)
        )
    build()
    nofile = raise_nofile(s.idle_conns + 1024)
    started, mach = time.monotonic(), machine()
    for rnd in range(1, s.rounds + 1):
        for key in round_order(s.peers, rnd):
            run_peer(PEER_BY_KEY[key], rnd, s, nofile)
    data = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": mach,
        "elapsed_s": time.monotonic() - started,
        "settings": {
            "rounds": s.rounds,
            "duration": s.duration,
            "warmup": s.warmup,
            "idle_conns": s.idle_conns,
            "quiet_wait": s.quiet_wait,
            "peers": s.peers,
            "command": s.command.strip(),
        },
        "results": s.results,
    }
    (BUILD / "results.json").write_text(json.dumps(data, indent=1))
    print("\n".join(wildcard_section(s.results, summarize(s.results))))
    render(data, s.out_dir)


if __name__ == "__main__":
    main()
