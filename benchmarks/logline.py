"""
The cost of one classic text log line (twisted_echo/log/classic.py), in memory:
the connection lines through an event and through the direct path the
connection lines take (BufferedLogObserver.take_message), plus a line whose
field a peer filled with control characters (escaped).

    python benchmarks/logline.py                     # this checkout
    python benchmarks/logline.py OTHER/logtext.py    # A/B against another

With a second logtext.py (e.g. main's, from `git show main:twisted_echo/
logtext.py > /tmp/logtext_main.py`), both are timed in one process, in
alternating rounds, best of each, in CPU time (time.process_time): on a
shared machine other load changes separate runs more than the difference
measured. Pin it: `taskset -c 1`.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import timeit
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from twisted.logger import LogLevel

HERE = Path(__file__).resolve().parent.parent / "twisted_echo" / "logtext.py"
ROUNDS = 40
NUMBER = 2000

CLOSE = {
    "log_format": "{service} connection from {peer} closed: {bytes_in} bytes in, "
    "{bytes_out} bytes out, {duration:.3f} s",
    "log_time": 1796000000.25,
    "log_level": LogLevel.info,
    "log_namespace": "twisted_echo.services.echo.Echo",
    "service": "echo",
    "peer": "tcp:127.0.0.1:52730",
    "bytes_in": 64,
    "bytes_out": 64,
    "duration": 0.0012,
}
OPEN = "{service} connection from {peer}{via}"
PEER6 = "tcp6:\\:\\:1:52730"
FORGED = (
    "unix:/x\r2026-01-01T00:00:00+0000 [twisted_echo.app.server#critical] FORGED\x1b[2J"
)


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make_text = getattr(module, "format_escaped", _format_map)
    return module


def _format_map(format: str, fields: dict[str, str]) -> str:
    return format.format_map(fields)


def direct(module: ModuleType, classic: Any, fields: dict[str, str]) -> str:
    """
    The direct path: a logtext.py without C{format_escaped} (main's) formats
    with C{str.format_map}.
    """
    text = module.make_text(OPEN, fields)
    line: str = classic.line(1796000000.25, "twisted_echo.services.echo."
        "Echo#info", text)
    return line


CASES = {
    "event, IPv4 close line": lambda m, c: c(CLOSE),
    "event, IPv6 close line": lambda m, c: c(dict(CLOSE, peer=PEER6)),
    "event, forged UNIX path": lambda m, c: c(dict(CLOSE, peer=FORGED)),
    "direct, IPv4 open line": lambda m, c: direct(
        m, c, {"service": "echo", "peer": "tcp:127.0.0.1:52730", "via": ""}
    ),
    "direct, IPv6 open line": lambda m, c: direct(
        m, c, {"service": "echo", "peer": PEER6, "via": ""}
    ),
    "direct, forged UNIX path": lambda m, c: direct(
        m, c, {"service": "echo", "peer": FORGED, "via": ""}
    ),
}


def main() -> None:
    modules = [("this", load("logtext_this", HERE))]
    if len(sys.argv) > 1:
        modules.insert(0, ("other", load("logtext_other", Path(sys.argv[1]))))
    for name, case in CASES.items():
        best: dict[str, float] = {}
        for i in range(ROUNDS):
            for label, module in modules if i % 2 else modules[::-1]:
                run = partial(case, module, module.ClassicText())
                took = min(
                    timeit.repeat(run, number=NUMBER, repeat=3, timer=time.process_time)
                )
                best[label] = min(best.get(label, float("inf")), took / NUMBER * 1e6)
        print(f"{name}: " + ", ".join(f"{k} {v:.2f} µs" for k, v in best.items()))


if __name__ == "__main__":
    main()
