"""
The counting mode of benchmarks/run.py (`--count`): what a server does per
operation, counted rather than timed.

Timings on a shared 2-vCPU host move 10-20 % between runs; counts do not.
Two counts are taken of a server that serves a paced load (one operation in
flight, so that no server batches):

- user-space instructions: `Ir`, the instructions executed, from valgrind's
  cachegrind (`valgrind --tool=cachegrind --cache-sim=no`), of every thread
  of the server process;
- system calls: `strace -c -f`, every thread and child of the server.

Each count is of a whole server process, from start to exit, so it includes
the start-up and the shut-down. The same server is therefore run twice, once
serving N1 operations and once N2, and the cost of one operation is

    (count at N2 - count at N1) / (N2 - N1)

in which start-up, shut-down and the load's connection set-up cancel.

This module holds the parts that need no process: the tools' output parsers,
the arithmetic and the report table. benchmarks/run.py runs the processes.
"""

from __future__ import annotations

import re
import shutil
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: How to install the counting tools (Debian packages of the same names).
TOOLS_INSTALL = "apt-get install valgrind strace"
TOOLS = ("valgrind", "strace")
#: Cachegrind's cheapest run: instructions only, no cache simulation.
CACHEGRIND = ("valgrind", "--tool=cachegrind", "--cache-sim=no")


@dataclass(frozen=True)
class CountLoad:
    """One paced load of the counting mode.

    `args` are loadgen's (benchmarks/loadgen.c) without the port and the
    operation count; `n1` < `n2` are the two operation counts; `rate` is in
    operations per second (the same in `args`).
    """

    key: str
    title: str
    unit: str
    service: str
    args: tuple[str, ...]
    n1: int
    n2: int
    rate: int


def _rr(proto: str) -> tuple[str, ...]:
    return ("rr", "--proto", proto, "--conns", "1", "--size", "1024", "--rate", "200")


COUNT_LOADS = [
    CountLoad("rr", "echo, 1 KiB request/response at 200/s", "request", "echo",
              _rr("echo"), 200, 1200, 200),
    CountLoad("upper", "upper, 1 KiB request/response at 200/s", "request", "upper",
              _rr("upper"), 200, 1200, 200),
    CountLoad("welcome", "welcome, 1 KiB lines at 200/s", "line", "welcome",
              _rr("welcome"), 200, 1200, 200),
    CountLoad("stream", "echo, 64 KiB chunks at 200/s, one in flight", "64 KiB chunk",
              "echo",
              ("stream", "--conns", "1", "--size", "65536", "--window", "1",
               "--rate", "200"), 200, 1200, 200),
    CountLoad("connect", "echo, connect + 64 B echo + close at 100/s", "connection",
              "echo", ("connect", "--conns", "1", "--size", "64", "--rate", "100"),
              100, 600, 100),
    CountLoad("udp", "UDP echo, 64 B datagrams at 200/s, one in flight", "datagram",
              "udp", ("udp", "--size", "64", "--window", "1", "--rate", "200"),
              200, 1200, 200),
]  # fmt: skip
COUNT_BY_KEY = {c.key: c for c in COUNT_LOADS}


def missing_tools(which: Iterable[str] = TOOLS) -> list[str]:
    """The counting tools (of `which`) not found on PATH, each with how to get it."""
    return [
        f"the `{tool}` program (counting mode): {TOOLS_INSTALL}"
        for tool in which
        if shutil.which(tool) is None
    ]


def parse_cachegrind(text: str) -> int:
    """
    The total `Ir` (instructions executed) of a cachegrind output file
    (`--cachegrind-out-file`): its `summary:` line, whose first figure is
    the first of its `events:`.

    Raises ValueError if the file has no summary or does not count Ir first.
    """
    events = re.search(r"^events:\s*(.+)$", text, re.M)
    summary = re.search(r"^summary:\s*(.+)$", text, re.M)
    if not events or not summary:
        raise ValueError("not a cachegrind output file (no events: or summary: line)")
    if events.group(1).split()[0] != "Ir":
        raise ValueError(f"cachegrind counted {events.group(1).split()[0]}, not Ir")
    return int(summary.group(1).split()[0])


_STRACE_ROW = re.compile(
    r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(?P<calls>\d+)\s+(?:(?P<errors>\d+)\s+)?"
    r"(?P<name>\w+)\s*$"
)


def parse_strace_summary(text: str) -> dict[str, int]:
    """
    Calls per system call from `strace -c` output (`-o FILE`), with the
    `total` row under the key "total".

    Rows are `% time, seconds, usecs/call, calls, [errors], syscall`. Raises
    ValueError if there is no `total` row.
    """
    calls: dict[str, int] = {}
    for line in text.splitlines():
        m = _STRACE_ROW.match(line)
        if m:
            calls[m["name"]] = int(m["calls"])
    if "total" not in calls:
        raise ValueError("not an strace -c summary (no total row)")
    return calls


def per_op(count1: float, ops1: int, count2: float, ops2: int) -> float:
    """(count2 - count1) / (ops2 - ops1): the cost of one operation, without
    what both runs share (start-up, shut-down). Raises ValueError if the
    operation counts are equal."""
    if ops2 == ops1:
        raise ValueError("the two runs served as many operations")
    return (count2 - count1) / (ops2 - ops1)


def per_op_calls(
    calls1: Mapping[str, int], ops1: int, calls2: Mapping[str, int], ops2: int
) -> dict[str, float]:
    """per_op for each system call in either summary (a missing one: 0)."""
    names = set(calls1) | set(calls2)
    return {
        name: per_op(calls1.get(name, 0), ops1, calls2.get(name, 0), ops2)
        for name in sorted(names)
    }


def spread(values: Iterable[float]) -> float:
    """(max - min) / mean of repeated measurements: 0.01 is 1 %."""
    v = list(values)
    mean = statistics.fmean(v)
    return (max(v) - min(v)) / mean if mean else 0.0


def fmt_count(value: float | None) -> str:
    """23012.4 -> '23.0k'; 3.04 -> '3.04'; None -> '–'."""
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.2f}"


def cell(values: list[float]) -> str:
    """The repeats of one figure, and their spread: '23.0k, 23.1k (0.4 %)'."""
    if not values:
        return "–"
    text = ", ".join(fmt_count(v) for v in values)
    if len(values) > 1:
        text += f" ({spread(values):.1%})"
    return text


def top_calls(calls: Mapping[str, float], least: float = 0.05) -> str:
    """'epoll_wait 1.00, recvfrom 1.00, sendto 1.00': the calls per operation
    of at least `least`, most first (not the total)."""
    shown = sorted(
        ((n, c) for n, c in calls.items() if n != "total" and c >= least),
        key=lambda nc: (-nc[1], nc[0]),
    )
    return ", ".join(f"{n} {c:.2f}" for n, c in shown)


#: The counts section of docs/benchmarks.md lies between these lines: a
#: counting run replaces it, a timing run (which rewrites the file) keeps it.
#: The WebSocket section (`run.py --websocket`) has its own pair, with
#: `websocket` for `counts`.
SECTION_BEGIN, SECTION_END = "<!-- counts: begin -->", "<!-- counts: end -->"


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}: begin -->", f"<!-- {name}: end -->"


def replace_section(text: str, section: list[str], name: str = "counts") -> str:
    """`text` with `section` (lines) between the markers of section `name`,
    replacing what was there, or appended with its markers if `text` has
    none."""
    begin, end = _markers(name)
    block = "\n".join([begin, *section, end])
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"


def section_of(text: str, name: str = "counts") -> str:
    """The section `name` of `text`, markers included, or ""."""
    begin, end = _markers(name)
    if begin not in text or end not in text:
        return ""
    inside = text.split(begin, 1)[1].split(end, 1)[0]
    return begin + inside + end


def write_section(path: Path, section: list[str], name: str = "counts") -> None:
    """Put `section` in the file `path` (created if missing): replace_section."""
    text = path.read_text() if path.exists() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_section(text, section, name))


def kept_section(path: Path, name: str = "counts") -> str:
    """section_of the file `path`, or "" if there is no such file."""
    return section_of(path.read_text(), name) if path.exists() else ""
