"""
C{sockecho-client faults} (L{twisted_echo.client.faultreport},
L{twisted_echo.client.faultseen}): what a plain client meets, named in
docs/faults.md's terms. The words on observations made up here; the
observations themselves against a real C{twistd} with C{--faults} (and
its admin API for the other profiles), byte counts exact.
"""

from __future__ import annotations

import atexit
import json
import socket
import subprocess
import sys
import unittest

from twisted_echo.client.endpoints import EndpointError, parse_stream_target
from twisted_echo.client.faultreport import FaultRunConfig, observe, payload_of
from twisted_echo.client.faultseen import Observation, classify, format_report
from twisted_echo.testing.spawn import SockechoProcess, start_sockecho

#: Seconds a client run may take before the test gives up on it.
CLIENT_TIMEOUT = 60.0
#: The run's own settings: a short stall timeout (a blackhole), a short
#: half-close probe.
CONFIG = FaultRunConfig(size=4096, timeout=1.0, half_close_wait=0.3, slow=0.2)

#: A profile that never fires (p=0): clean behaviour.
NEVER = "reset-after=1,p=0"

_SERVERS: dict[tuple[str, ...], SockechoProcess] = {}


def shared(*options: str, tls: bool = False) -> SockechoProcess:
    """
    A sockecho with echo alone and C{options}, shared by the tests that
    ask for the same (started by the first, stopped when the test run's
    Python exits); each test sets its profile with C{server.faults()}.
    """
    key = (*options, str(tls))
    server = _SERVERS.get(key)
    if server is None or server.process.poll() is not None:
        server = start_sockecho(
            "--no-upper", "--no-welcome", "--no-udp", *options, tls=tls
        )
        atexit.register(server.kill)
        _SERVERS[key] = server
    return server


def run_client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twisted_echo.client", *args],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
    )


class ClassifyTests(unittest.TestCase):
    def seen(self, **fields: object) -> list[str]:
        observation = Observation(1, sent=4096, **fields)  # type: ignore[arg-type]
        return classify(observation, 0.2)

    def test_endings(self) -> None:
        self.assertEqual(self.seen(ending="reset", received=1000), ["reset-after=1000"])
        self.assertEqual(
            self.seen(ending="eof", received=4000),
            ["close-after=4000 or truncate=96"],
        )
        self.assertEqual(
            self.seen(ending="half-close", received=100), ["half-close-after=100"]
        )
        self.assertEqual(self.seen(ending="stall", received=0), ["blackhole"])
        self.assertEqual(
            self.seen(ending="stall", received=10, first_byte=0.001),
            ["stall after 10 B"],
        )
        self.assertEqual(
            self.seen(ending="connect-timeout"),
            ["refuse (connect timed out: backlog full?)"],
        )
        self.assertEqual(self.seen(ending="refused"), ["refused (nothing listening)"])

    def test_clean_is_nothing(self) -> None:
        self.assertEqual(
            self.seen(ending="clean", received=4096, first_byte=0.001, segments=[4096]),
            [],
        )

    def test_shapes_and_content(self) -> None:
        self.assertEqual(
            self.seen(ending="clean", received=4096, first_byte=0.3),
            ["delay=300ms"],
        )
        self.assertEqual(
            self.seen(
                ending="clean",
                received=250,
                first_byte=0.001,
                segments=[100, 100, 50],
                gaps=[0.03, 0.03],
            ),
            ["slice=100,gap=30ms"],
        )
        self.assertEqual(
            self.seen(
                ending="clean",
                received=4096,
                first_byte=0.001,
                corrupted=[999, 1999, 2999, 3999],
                corrupted_count=4,
            ),
            ["corrupt=1000"],
        )
        self.assertEqual(
            self.seen(
                ending="clean",
                received=4096,
                first_byte=0.001,
                corrupted=[5, 17],
                corrupted_count=2,
            ),
            ["corrupt"],
        )

    def test_report(self) -> None:
        observation = Observation(
            1, ending="reset", sent=4096, received=1000, connect=0.001,
            first_byte=0.001, segments=[1000], error="ECONNRESET",
        )  # fmt: skip
        observation.seen = classify(observation, 0.2)
        text = format_report("tcp:127.0.0.1:7", 4096, 1.0, [observation])
        self.assertIn("connection 1: ECONNRESET after 1000 B", text)
        self.assertIn("received 1000 of 4096 B", text)
        self.assertIn("seen: reset-after=1000", text)
        self.assertEqual(
            text.splitlines()[-1], "result: faults met on 1 of 1 connection(s)"
        )


class TargetTests(unittest.TestCase):
    def test_forms(self) -> None:
        self.assertEqual(str(parse_stream_target("tcp:127.0.0.1:7")), "tcp:127.0.0.1:7")
        self.assertEqual(parse_stream_target("tcp:host=localhost:port=7007").port, 7007)
        self.assertEqual(parse_stream_target("tcp6:[::1]:7").host, "::1")
        self.assertEqual(parse_stream_target(r"tcp6:\:\:1:7").host, "::1")
        self.assertEqual(parse_stream_target("unix:/run/e.sock").path, "/run/e.sock")
        tls = parse_stream_target("ssl:localhost:7207:hostname=echo.test")
        self.assertEqual((tls.kind, tls.server_name), ("ssl", "echo.test"))

    def test_bad(self) -> None:
        for text, words in [
            ("udp:127.0.0.1:7", "faults takes tcp:"),
            ("tcp:127.0.0.1:0", "port 1-65535"),
            ("tcp:127.0.0.1", "expected tcp:HOST:PORT"),
            ("tcp:127.0.0.1:7:timeout=3", "no timeout="),
            ("ssl:localhost", "expected ssl:HOST:PORT"),
        ]:
            with self.assertRaises(EndpointError) as caught:
                parse_stream_target(text)
            self.assertIn(words, str(caught.exception), text)


class RealServerTests(unittest.TestCase):
    """
    Against a real C{twistd}: C{--faults echo=reset-after=1000} from its
    start, the other profiles through its admin API for one test each.
    """

    def setUp(self) -> None:
        self.server = shared("--faults", "echo=reset-after=1000")
        host, port = self.server.address("echo")
        self.target = parse_stream_target(f"tcp:{host}:{port}")

    def observe(self, profile: str | None = None) -> Observation:
        if profile is None:
            return observe(self.target, CONFIG)
        with self.server.faults("echo", profile):
            return observe(self.target, CONFIG)

    def test_reset_after(self) -> None:
        """
        Exactly 1,000 bytes, then ECONNRESET; named C{reset-after=1000}.
        """
        seen = self.observe()
        self.assertEqual(
            (seen.ending, seen.received, seen.sent, seen.error),
            ("reset", 1000, 4096, "ECONNRESET"),
        )
        self.assertEqual(seen.seen, ["reset-after=1000"])

    def test_close_after(self) -> None:
        seen = self.observe("close-after=777")
        self.assertEqual((seen.ending, seen.received), ("eof", 777))
        self.assertEqual(seen.seen, ["close-after=777 or truncate=3319"])

    def test_truncate(self) -> None:
        """
        The reply without its last 96 bytes, then EOF: the same as a close
        after 4,000 bytes to a client, and named as either.
        """
        seen = self.observe("truncate=96")
        self.assertEqual((seen.ending, seen.received), ("eof", 4000))
        self.assertEqual(seen.seen, ["close-after=4000 or truncate=96"])
        self.assertEqual(seen.corrupted_count, 0)

    def test_half_close_after(self) -> None:
        """
        100 bytes, then EOF while the server still takes what we send.
        """
        seen = self.observe("half-close-after=100")
        self.assertEqual((seen.ending, seen.received), ("half-close", 100))
        self.assertEqual(seen.seen, ["half-close-after=100"])

    def test_blackhole(self) -> None:
        """
        Connected, nothing answered: our own 1 s timeout fires with no byte.
        """
        seen = self.observe("blackhole")
        self.assertIsNotNone(seen.connect)
        self.assertEqual(
            (seen.ending, seen.received, seen.first_byte), ("stall", 0, None)
        )
        self.assertEqual(seen.seen, ["blackhole"])

    def test_delay(self) -> None:
        """
        The whole reply, intact, its first byte held back past the 200 ms
        the run calls slow: named C{delay=...}.
        """
        seen = self.observe("delay=300ms")
        self.assertEqual((seen.ending, seen.received), ("clean", 4096))
        assert seen.first_byte is not None
        self.assertGreater(seen.first_byte, CONFIG.slow)
        [named] = seen.seen
        self.assertTrue(named.startswith("delay="), named)

    def test_corrupt(self) -> None:
        seen = self.observe("corrupt=1000")
        self.assertEqual((seen.ending, seen.received), ("clean", 4096))
        self.assertEqual(seen.corrupted, [999, 1999, 2999, 3999])
        self.assertEqual(seen.seen, ["corrupt=1000"])

    def test_slice(self) -> None:
        seen = self.observe("slice=1000,gap=100ms")
        self.assertEqual(seen.segments, [1000, 1000, 1000, 1000, 96])
        self.assertEqual(seen.ending, "clean")
        [named] = seen.seen
        self.assertTrue(named.startswith("slice=1000,gap="), named)

    def test_clean(self) -> None:
        seen = self.observe(NEVER)
        self.assertEqual((seen.ending, seen.received, seen.seen), ("clean", 4096, []))
        self.assertEqual(seen.segments, [4096])

    def test_refused(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            free = sock.getsockname()[1]
        seen = observe(parse_stream_target(f"tcp:127.0.0.1:{free}"), CONFIG)
        self.assertEqual((seen.ending, seen.connect), ("refused", None))

    def test_command_line(self) -> None:
        """
        Exit status 1 and a report when a fault is met, 0 when clean; the
        JSON names it too; a bad option is one line and exit status 2.
        """
        host, port = self.server.address("echo")
        endpoint = f"tcp:{host}:{port}"
        text = run_client("faults", endpoint, "--count", "2")
        self.assertEqual((text.returncode, text.stderr), (1, ""))
        self.assertEqual(text.stdout.count("seen: reset-after=1000"), 2, text.stdout)
        as_json = run_client("faults", endpoint, "--json", "--size", "2000")
        report = json.loads(as_json.stdout)
        [connection] = report["connections"]
        self.assertEqual(
            (connection["ending"], connection["received"], connection["sent"]),
            ("reset", 1000, 2000),
        )
        self.assertEqual(report["faulted"], 1)
        with self.server.faults("echo", NEVER):
            clean = run_client("faults", endpoint)
        self.assertEqual(clean.returncode, 0, clean.stdout + clean.stderr)
        self.assertTrue(clean.stdout.endswith("result: clean (1 connection(s))\n"))
        bad = run_client("faults", endpoint, "--size", "0")
        self.assertEqual((bad.returncode, bad.stdout), (2, ""))
        self.assertEqual(len(bad.stderr.splitlines()), 1, bad.stderr)


class PayloadTests(unittest.TestCase):
    def test_same_every_run(self) -> None:
        self.assertEqual(payload_of(100), payload_of(100))
        self.assertEqual(len(payload_of(4096)), 4096)
