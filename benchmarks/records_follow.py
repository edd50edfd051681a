"""
Issue 22's follower figure: does `sockecho-client records --follow` keep
up with short connections at a fixed rate, or say how many it skipped?

A real `twistd -n sockecho` (start_sockecho, `--log-level warn`) pinned to
CPU 0; on CPU 1, `sockecho-client records ENDPOINT --follow --json` and the
C load generator (benchmarks/loadgen.c, built into benchmarks/build/ as
run.py builds it) making COUNT short echo connections (connect, 64-byte
echo, close) at RATE per second (`loadgen connect --rate RATE --block`).

Prints the rate loadgen reached, the records the server made during the
run (its `last_id` moved by that many), the records the follower printed
of them and those it said it skipped (printed + skipped must equal made),
how far behind it was when the load stopped, how long it took to catch up,
and the follower's CPU time per record.

    python benchmarks/records_follow.py                       # 50,000 at 5,000/s
    python benchmarks/records_follow.py --rate 8000 --count 40000 --records 500

Everything stays on 127.0.0.1, bounded by COUNT (and 30 s to catch up).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from twisted_echo.testing.spawn import start_sockecho

HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "build" / "loadgen"
SERVER_CPU = 0
CLIENT_CPU = 1
#: `"id": N` in a record printed with --json (its first field).
ID = re.compile(r'"id": (\d+)')


def build_loadgen() -> Path:
    """
    Compile loadgen.c into build/ when missing or older than its source, as
    benchmarks/run.py does.
    """
    source = HERE / "loadgen.c"
    LOADGEN.parent.mkdir(exist_ok=True)
    if not LOADGEN.exists() or LOADGEN.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(
            ["gcc", "-O2", "-Wall", "-o", str(LOADGEN), str(source)], check=True
        )
    return LOADGEN


def pin(pid: int, cpu: int) -> None:
    """Pin every thread of process `pid` to `cpu`."""
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), {cpu})


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def last_id(host: str, port: int) -> int:
    """The number of the server's last record."""
    url = f"http://{host}:{port}/records?limit=0"
    with urllib.request.urlopen(url, timeout=10) as response:
        number: int = json.load(response)["last_id"]
    return number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument(
        "--conns", type=int, default=256, help="loadgen's slots (connections at once)"
    )
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    loadgen = build_loadgen()
    with start_sockecho(
        "--log-level", "warn", "--records", str(args.records),
        "--no-upper", "--no-welcome", "--no-udp",
    ) as server:  # fmt: skip
        pin(server.pid, SERVER_CPU)
        host, port = server.address("metrics")
        follower = subprocess.Popen(
            ["taskset", "-c", str(CLIENT_CPU), sys.executable, "-m",
             "twisted_echo.client", "records", f"{host}:{port}", "--follow",
             "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert follower.stdout is not None and follower.stderr is not None
        out, err = follower.stdout, follower.stderr
        printed_ids: list[int] = []
        said = ""

        def count() -> None:
            for line in out:
                found = ID.search(line)
                if found:
                    printed_ids.append(int(found.group(1)))

        def read_err() -> None:
            nonlocal said
            for line in err:
                said += line

        for target in (count, read_err):
            threading.Thread(target=target, daemon=True).start()
        echo = ["--port", str(server.echo[1]), "--size", "64", "--block"]
        one = ["taskset", "-c", str(CLIENT_CPU), str(loadgen), "connect", *echo]
        # The follower prints what closes once it has started: one
        # connection at a time until it prints one.
        deadline = time.monotonic() + 30
        while not printed_ids:
            if follower.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the follower did not start: {said.strip()}")
            subprocess.run([*one, "--max-ops", "1", "--warmup", "0"],
                           check=True, capture_output=True)  # fmt: skip
            time.sleep(0.2)
        base = last_id(host, port)
        while printed_ids[-1] < base:
            time.sleep(0.05)
        cpu_before = cpu_seconds(follower.pid)
        load = subprocess.run(
            [*one, "--conns", str(args.conns), "--rate", str(args.rate),
             "--max-ops", str(args.count), "--warmup", "0",
             "--server-pid", str(server.pid),
             "--duration", str(args.count / args.rate * 2 + 5)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        report = json.loads(load.stdout)
        stopped = time.monotonic()
        end = last_id(host, port)
        behind = end - (printed_ids[-1] if printed_ids else base)
        deadline = stopped + 30
        skipped = 0
        while time.monotonic() < deadline:
            found = re.findall(r"(\d+) in all\)", said)
            skipped = int(found[-1]) if found else 0
            if printed_ids and printed_ids[-1] >= end:
                break
            time.sleep(0.01)
        caught_up = time.monotonic() - stopped
        cpu = cpu_seconds(follower.pid) - cpu_before
        follower.terminate()
        follower.wait(timeout=10)
    made = end - base
    printed = sum(1 for i in printed_ids if base < i <= end)
    duplicates = printed - len({i for i in printed_ids if base < i <= end})
    print(
        f"loadgen: {report['ops']} connections at {report['ops_per_s']:,.0f}/s "
        f"({report['errors']} errors, {report['mismatches']} mismatches; "
        f"server CPU {report['server_cpu'] * 100:.0f} %, "
        f"loadgen {report['gen_cpu'] * 100:.0f} %); "
        f"the server made {made} records\n"
        f"follower: printed {printed} and said it skipped {skipped} "
        f"({printed + skipped} of {made}, {duplicates} twice); "
        f"{behind} behind when the load stopped, caught up {caught_up:.2f} s "
        f"later; {cpu / max(printed, 1) * 1e6:.0f} µs CPU per record printed"
    )


if __name__ == "__main__":
    main()
