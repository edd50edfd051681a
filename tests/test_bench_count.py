"""
The counting mode of benchmarks/run.py (benchmarks/counting.py): it reads
cachegrind's and strace's outputs as they are written, and turns two runs of
a server into a cost per operation with start-up cancelled. Pure: sample
outputs, no valgrind or strace needed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import unittest
from types import ModuleType

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_counting() -> ModuleType:
    """benchmarks/counting.py (benchmarks/ is not a package)."""
    path = os.path.join(REPO, "benchmarks", "counting.py")
    spec = importlib.util.spec_from_file_location("bench_counting", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


counting = load_counting()

#: The start and end of a cachegrind output file, as valgrind 3.19 writes it
#: with --cache-sim=no (the per-function lines between are left out).
CACHEGRIND_OUT = """\
desc: I1 cache:         32768 B, 64 B, 8-way associative
desc: D1 cache:         49152 B, 64 B, 12-way associative
desc: LL cache:         50331648 B, 64 B, 12-way associative
cmd: /venv/bin/python /venv/bin/twistd -n --pidfile= sockecho --echo tcp:42123
events: Ir
fl=./csu/../csu/libc-start.c
fn=__libc_start_main@@GLIBC_2.34
128 2
0 2
summary: 1331480448
"""

#: An `strace -c -f -o FILE` summary (strace 6.1), shortened: rows with and
#: without an errors column.
STRACE_OUT = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ------------------
 21.30    0.003152           1      3020       248 newfstatat
 14.14    0.002092           2       953           read
 11.41    0.001689           8       200           sendto
 11.24    0.001663           8       207           epoll_wait
  3.09    0.000457           2       202           recvfrom
  0.00    0.000000           0         2           close_range
------ ----------- ----------- --------- --------- ------------------
100.00    0.014799           1      4584       248 total
"""


class ParseTests(unittest.TestCase):
    def test_cachegrind_summary(self) -> None:
        """The instructions counted are the summary line's Ir."""
        self.assertEqual(counting.parse_cachegrind(CACHEGRIND_OUT), 1331480448)

    def test_cachegrind_not_ir(self) -> None:
        """A file whose first event is not Ir is refused, not misread."""
        text = CACHEGRIND_OUT.replace("events: Ir", "events: I1mr Ir")
        with self.assertRaises(ValueError):
            counting.parse_cachegrind(text)

    def test_cachegrind_truncated(self) -> None:
        """A file cut before its summary (a server killed hard) is refused."""
        with self.assertRaises(ValueError):
            counting.parse_cachegrind(CACHEGRIND_OUT.rsplit("summary", 1)[0])

    def test_strace_calls(self) -> None:
        """Each row's calls column, errors column or not, and the total."""
        calls = counting.parse_strace_summary(STRACE_OUT)
        self.assertEqual(calls["newfstatat"], 3020)
        self.assertEqual(calls["read"], 953)
        self.assertEqual(calls["epoll_wait"], 207)
        self.assertEqual(calls["close_range"], 2)
        self.assertEqual(calls["total"], 4584)
        self.assertEqual(len(calls), 7)

    def test_strace_no_total(self) -> None:
        with self.assertRaises(ValueError):
            counting.parse_strace_summary(STRACE_OUT.rsplit("100.00", 1)[0])


class PerOperationTests(unittest.TestCase):
    def test_start_up_cancels(self) -> None:
        """(N2 count - N1 count) / (N2 - N1): a fixed start-up cost drops out."""
        start_up, each = 1_300_000_000, 23_000
        one = start_up + 200 * each
        two = start_up + 1200 * each
        self.assertEqual(counting.per_op(one, 200, two, 1200), each)

    def test_same_operations(self) -> None:
        with self.assertRaises(ValueError):
            counting.per_op(1, 200, 2, 200)

    def test_calls_by_name(self) -> None:
        """Per system call; one that only the longer run made counts from 0."""
        one = {"epoll_wait": 210, "read": 950, "total": 1160}
        two = {"epoll_wait": 1210, "read": 950, "accept4": 10, "total": 2170}
        calls = counting.per_op_calls(one, 200, two, 1200)
        self.assertEqual(
            calls, {"accept4": 0.01, "epoll_wait": 1.0, "read": 0.0, "total": 1.01}
        )
        self.assertEqual(counting.top_calls(calls), "epoll_wait 1.00")

    def test_spread_and_cell(self) -> None:
        """Repeats are shown with their spread, (max - min) / mean."""
        self.assertAlmostEqual(counting.spread([99.0, 101.0]), 0.02)
        self.assertEqual(counting.cell([23012.0, 23240.0]), "23.0k, 23.2k (1.0%)")
        self.assertEqual(counting.cell([3.0]), "3.00")
        self.assertEqual(counting.cell([]), "–")


class ToolsTests(unittest.TestCase):
    def test_missing_tool_named_with_its_package(self) -> None:
        """A missing tool is named with the apt-get line that installs it."""
        (line,) = counting.missing_tools(["no-such-counting-tool"])
        self.assertIn("`no-such-counting-tool`", line)
        self.assertIn("apt-get install valgrind strace", line)

    def test_loads_are_paced_below_n2(self) -> None:
        """Every load is paced (--rate given), and N1 < N2."""
        for load in counting.COUNT_LOADS:
            self.assertIn("--rate", load.args)
            self.assertEqual(load.args[load.args.index("--rate") + 1], str(load.rate))
            self.assertLess(load.n1, load.n2)


class SectionTests(unittest.TestCase):
    """The counts section of docs/benchmarks.md survives both kinds of run."""

    def test_appended_then_replaced(self) -> None:
        timings = "# sockecho benchmarks\n\n## Results\n"
        once = counting.replace_section(timings, ["## Counted", "old"])
        self.assertTrue(once.startswith(timings))
        self.assertIn("old", once)
        twice = counting.replace_section(once + "tail\n", ["## Counted", "new"])
        self.assertNotIn("old", twice)
        self.assertIn("new", twice)
        self.assertTrue(twice.startswith(timings))
        self.assertTrue(twice.endswith("tail\n"))

    def test_timing_run_keeps_it(self) -> None:
        """What a timing run re-appends is the section with its markers."""
        text = counting.replace_section("# timings\n", ["## Counted", "rr 23.0k"])
        kept = counting.section_of(text)
        self.assertIn("rr 23.0k", kept)
        self.assertEqual(counting.section_of("# fresh timings\n\n" + kept), kept)
        self.assertEqual(counting.section_of("# no counts yet\n"), "")

    def test_websocket_section_apart(self) -> None:
        """The WebSocket section (run.py --websocket) has its own markers:
        writing it leaves the counts section alone, and the other way."""
        text = counting.replace_section("# timings\n", ["## Counted", "rr 23.0k"])
        text = counting.replace_section(text, ["## WebSocket", "ws 1"], "websocket")
        text = counting.replace_section(text, ["## Counted", "rr 24k"])
        text = counting.replace_section(text, ["## WebSocket", "ws 2"], "websocket")
        self.assertIn("ws 2", counting.section_of(text, "websocket"))
        self.assertNotIn("rr", counting.section_of(text, "websocket"))
        self.assertIn("rr 24k", counting.section_of(text))
        self.assertNotIn("ws 1", text)
        self.assertNotIn("rr 23.0k", text)
