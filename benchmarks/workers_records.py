"""
What the connection records cost with --workers: each worker sends every
record to the supervisor over the control channel, and the supervisor
numbers and keeps it (twisted_echo/app/forwarded.py).

    python benchmarks/workers_records.py [--rounds 3] [--seconds 5] [--rate 2000]
    python benchmarks/workers_records.py --workers 1   # one process, to compare

Each round starts `twistd sockecho --workers 2` (echo only, limits off,
`--log-level warn`, `--metrics` on loopback: the records are sent to the
supervisor only when something reads them) with `--records 2000` and then
with `--records 0` (the order alternates), every sockecho process pinned
to CPU 0 and the C load generator to CPU 1 (benchmarks/run.py's), runs
the `connect` workload (8 at a time, 64 B echoed, then closed) at a fixed
rate, and prints the CPU time per connection of the supervisor and of all
sockecho processes together, in microseconds; medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (benchmarks/run.py: build, loadgen, CPUs, ports)
import workers  # noqa: E402  (benchmarks/workers.py: start, stop, tree_ticks)

#: --workers of the server measured (--workers on this script's command line).
WORKERS = 2


def measure(records: int, seconds: float, rate: int) -> tuple[float, float, int]:
    """
    @return: supervisor and whole-tree CPU microseconds per connection, and
        the connections made.
    """
    proc, port, lines = start_quiet(records)
    try:
        # Let the workers finish starting (their imports) before counting.
        time.sleep(1.0)
        supervisor0 = run.process_ticks(proc.pid)
        tree0 = workers.tree_ticks(proc.pid)
        args = ["connect", "--port", str(port), "--conns", "8", "--size", "64"]
        args += ["--duration", str(seconds), "--warmup", "0", "--rate", str(rate)]
        done = subprocess.run(
            run.loadgen(args), capture_output=True, text=True, timeout=seconds + 60
        )
        if done.returncode:
            raise RuntimeError(done.stderr)
        report = json.loads(done.stdout)
        # The last records reach the supervisor at once; its ticks settle.
        time.sleep(0.5)
        supervisor1 = run.process_ticks(proc.pid)
        tree1 = workers.tree_ticks(proc.pid)
    finally:
        workers.stop(proc, lines)
    count = int(report.get("ops") or report.get("connections") or 0)
    tick = 1e6 / run.os.sysconf("SC_CLK_TCK")
    return (
        (supervisor1 - supervisor0) * tick / max(count, 1),
        (tree1 - tree0) * tick / max(count, 1),
        count,
    )


def start_quiet(records: int) -> tuple[subprocess.Popen[str], int, list[str]]:
    # benchmarks/workers.py's start() waits for the workers' "listening"
    # lines, which --log-level warn hides: wait for the port instead.
    port = run.free_port(run.socket.SOCK_STREAM, run.HOST)
    cmd = [
        "taskset", "-c", run.SERVER_CPU,
        str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=",
        "sockecho", "--echo", f"tcp:{port}:interface={run.HOST}",
        "--no-upper", "--no-welcome", "--no-udp", "--workers", str(WORKERS),
        *workers.LIMITS_OFF, "--records", str(records), "--log-level", "warn",
        "--metrics", f"tcp:0:interface={run.HOST}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=run.ROOT
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with run.socket.create_connection((run.HOST, port), timeout=1):
                return proc, port, []
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("sockecho did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    global WORKERS
    WORKERS = args.workers
    run.build()
    results: dict[int, list[tuple[float, float, int]]] = {2000: [], 0: []}
    for round_number in range(args.rounds):
        order = [2000, 0] if round_number % 2 == 0 else [0, 2000]
        for records in order:
            results[records].append(measure(records, args.seconds, args.rate))
    for records, found in results.items():
        supervisor = statistics.median(r[0] for r in found)
        tree = statistics.median(r[1] for r in found)
        made = [r[2] for r in found]
        print(
            f"--workers {WORKERS} --records {records}: CPU per connection at "
            f"{args.rate}/s: "
            f"supervisor {supervisor:.1f} µs, all processes {tree:.1f} µs "
            f"(connections per round: {made})"
        )


if __name__ == "__main__":
    main()
