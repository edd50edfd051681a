"""
Issue 22's follower figure: does `sockecho-client records --follow` keep
up with many short connections, or say how many it skipped? Against a real
`twistd -n sockecho` (start_sockecho, `--log-level warn`), COUNT short echo
connections from THREADS threads while a follower prints every record as
JSON; prints the connection rate reached, the records the follower
printed and those it said it skipped (printed + skipped must be COUNT;
counted from the follower's first record printed).

    python benchmarks/records_follow.py                 # 50,000 connections
    python benchmarks/records_follow.py --count 10000 --records 500

Everything stays on 127.0.0.1 and is bounded by COUNT (and 30 s to drain).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
import time

from benchmarks.records_ring import run
from twisted_echo.testing.spawn import start_sockecho


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    with start_sockecho(
        "--log-level", "warn", "--records", str(args.records)
    ) as server:
        host, port = server.address("metrics")
        follower = subprocess.Popen(
            [sys.executable, "-m", "twisted_echo.client", "records",
             f"{host}:{port}", "--follow", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        printed = 0
        assert follower.stdout is not None
        out = follower.stdout

        def count() -> None:
            nonlocal printed
            for _ in out:
                printed += 1

        counter = threading.Thread(target=count, daemon=True)
        counter.start()
        # The follower prints what closes once it has started: close one
        # connection at a time until it prints one.
        while not printed and follower.poll() is None:
            run(server.echo, 1, 1)
            time.sleep(0.1)
        base = printed
        started = time.monotonic()
        run(server.echo, args.count, args.threads)
        took = time.monotonic() - started
        deadline = time.monotonic() + 30
        skipped = 0
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if printed - base >= args.count:
                break
        follower.terminate()
        _, err = follower.communicate(timeout=10)
        found = re.findall(r"(\d+) in all\)", err)
        skipped = int(found[-1]) if found else 0
    done = args.count // args.threads * args.threads
    printed -= base
    print(
        f"{done} connections at {done / took:,.0f}/s: the follower printed "
        f"{printed} records and said it skipped {skipped} "
        f"({printed + skipped} of {done})"
    )


if __name__ == "__main__":
    main()
