"""
Measure sockecho's --workers 2 against one process.

    python benchmarks/workers.py [--rounds 5] [--duration 3]

Each round starts sockecho (limits off) with --workers 1, then with
--workers 2 (the order alternates), every sockecho process pinned to CPU 0
and the C load generator to CPU 1, as benchmarks/run.py does, and measures:

 - rr50: 50 connections of 1 KiB request/response, as fast as they go
   (requests/s);
 - rr50 at a fixed 20,000 requests/s: the CPU time of every sockecho
   process together (supervisor and workers), in µs per request;
 - how the work spread: each worker's share of the 50 connections and of
   the bytes echoed, from the workers' own shutdown lines.

Writes docs/workers.md (medians, spread, per round) and prints it. On this
two-CPU machine both workers share CPU 0, so the top rate cannot grow: the
figures show what the supervisor and a second worker cost, and whether the
kernel spreads connections evenly.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (benchmarks/run.py: build, loadgen, CPUs, ports)

FIXED_RATE = 20000
LIMITS_OFF = [
    "--max-connections", "0", "--max-per-peer", "0", "--max-buffer", "0",
    "--udp-rate", "0", "--udp-global-rate", "0",
]  # fmt: skip


def tree_ticks(pid: int) -> int:
    """CPU clock ticks of `pid` and its children (one level: the workers)."""
    total = run.process_ticks(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        try:
            total += run.process_ticks(int(child))
        except FileNotFoundError:
            pass
    return total


def start(workers: int) -> tuple[subprocess.Popen[str], int, list[str]]:
    port = run.free_port(run.socket.SOCK_STREAM, run.HOST)
    cmd = [
        "taskset", "-c", run.SERVER_CPU,
        str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=",
        "sockecho", "--echo", f"tcp:{port}:interface={run.HOST}",
        "--no-upper", "--no-welcome", "--no-udp", "--workers", str(workers),
        *LIMITS_OFF,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=run.ROOT,
    )
    lines: list[str] = []
    wanted = workers if workers > 1 else 1
    ready = 0
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while ready < wanted and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "echo listening on" in line and (workers == 1 or "[worker" in line):
            ready += 1
    if ready < wanted:
        proc.kill()
        raise RuntimeError("sockecho did not start:\n" + "".join(lines[-20:]))
    return proc, port, lines


def stop(proc: subprocess.Popen[str], lines: list[str]) -> list[str]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return lines + out.splitlines()


def loadgen(port: int, pid: int, duration: float, rate: int = 0) -> dict:
    args = ["rr", "--port", str(port), "--conns", "50", "--size", "1024"]
    args += ["--duration", str(duration), "--warmup", "0.5", "--server-pid", str(pid)]
    if rate:
        args += ["--rate", str(rate)]
    done = subprocess.run(
        run.loadgen(args), capture_output=True, text=True, timeout=duration + 60
    )
    if done.returncode:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout)


def spread(lines: list[str], workers: int) -> dict[str, list[int]]:
    """Each worker's connections and echoed bytes, from its own lines."""
    conns = [0] * workers
    echoed = [0] * workers
    for line in lines:
        number = 1
        match = re.search(r"\[worker (\d+) ", line)
        if match:
            number = int(match.group(1))
        elif workers > 1:
            continue
        if re.search(r"\] echo connection from \S+$", line):
            conns[number - 1] += 1
        summary = re.search(r"\] echo: connections=\d+ bytes_in=(\d+)", line)
        if summary and ("[worker" in line or workers == 1):
            echoed[number - 1] = int(summary.group(1))
    return {"connections": conns, "bytes": echoed}


def measure(workers: int, duration: float) -> dict:
    proc, port, lines = start(workers)
    try:
        run.wait_quiet(30)
        top = loadgen(port, proc.pid, duration)
        run.wait_quiet(30)
        before = tree_ticks(proc.pid)
        began = time.monotonic()
        fixed = loadgen(port, proc.pid, duration, FIXED_RATE)
        ticks = tree_ticks(proc.pid) - before
        seconds = time.monotonic() - began
    finally:
        lines = stop(proc, lines)
    # The load ran `duration` s after a 0.5 s warm-up, both at the fixed
    # rate: count the CPU over the whole call against every request sent.
    all_requests = fixed["ops_per_s"] * (duration + 0.5)
    tick = run.os.sysconf("SC_CLK_TCK")
    return {
        "workers": workers,
        "rr50": top["ops_per_s"],
        "fixed_rate": fixed["ops_per_s"],
        "cpu_us_per_request": ticks / tick / max(all_requests, 1) * 1e6,
        "seconds": round(seconds, 2),
        **spread(lines, workers),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3.0)
    a = ap.parse_args()
    run.build()
    rows: list[dict] = []
    for round_ in range(a.rounds):
        order = (1, 2) if round_ % 2 == 0 else (2, 1)
        for workers in order:
            row = measure(workers, a.duration)
            row["round"] = round_ + 1
            rows.append(row)
            print(json.dumps(row), flush=True)
    report(rows, a)


def report(rows: list[dict], a: argparse.Namespace) -> None:
    def med(workers: int, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["workers"] == workers)

    def rng(workers: int, key: str) -> str:
        values = [r[key] for r in rows if r["workers"] == workers]
        return f"{min(values):,.1f}–{max(values):,.1f}"

    out = [
        "# sockecho --workers 2 against one process",
        "",
        f"`python benchmarks/workers.py --rounds {a.rounds} --duration {a.duration}`:"
        " sockecho (limits off, echo only) pinned to CPU 0 with all its",
        "processes, the C load generator on CPU 1; rounds alternate which goes"
        " first. Medians (min–max).",
        "",
        "| figure | --workers 1 | --workers 2 | ratio |",
        "|---|---|---|---|",
    ]
    for key, name in (
        ("rr50", "rr50, 50 × 1 KiB, req/s"),
        ("cpu_us_per_request", f"CPU µs per request at {FIXED_RATE:,} req/s"),
    ):
        one, two = med(1, key), med(2, key)
        out.append(
            f"| {name} | {one:,.1f} ({rng(1, key)}) | {two:,.1f} ({rng(2, key)}) |"
            f" {two / one:.2f} |"
        )
    shares = []
    for row in rows:
        if row["workers"] == 2:
            total = sum(row["bytes"]) or 1
            shares.append(
                f"round {row['round']}: connections {row['connections']}, "
                f"bytes {[round(b / total * 100) for b in row['bytes']]} %"
            )
    out += [
        "",
        "How the work spread over the two workers (each round: 100 connections,"
        " two loadgen runs of 50; bytes echoed):",
        "",
    ]
    out += [f"- {s}" for s in shares]
    out += [
        "",
        "Both workers share CPU 0 here, so the top rate cannot grow and the"
        " second process costs CPU per request (context switches between"
        " them). On a machine with a free core per worker, each worker runs"
        " as the single process does on its own core: expect the top rate to"
        " grow with the workers until the clients, the network or the kernel"
        " limit it, and the CPU per request to stay near the one-process"
        " figure. The kernel's SO_REUSEPORT hash spreads connections, so the"
        " shares above vary by a few connections from run to run.",
    ]
    text = "\n".join(out) + "\n"
    (run.ROOT / "docs" / "workers.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
