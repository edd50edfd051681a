"""
Tests for L{twisted_echo.client.__main__}: options, and the command run as a
process (C{python -m twisted_echo.client}) against in-process servers.
"""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.protocols import wire
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.test_client_check import HALF_CLOSE_CHECKS
from tests.test_client_load import CorruptEcho, serve_tcp
from twisted_echo.client.__main__ import build_parser, load_config
from twisted_echo.client.errors import ClientUsageError
from twisted_echo.services.upper import UpperFactory

#: Seconds a client process may run.
PROCESS_TIMEOUT = 30


class _Collect(ProcessProtocol):
    def __init__(self, stdin: bytes) -> None:
        self.stdin = stdin
        self.out = b""
        self.err = b""
        self.ended: Deferred[tuple[bytes, bytes, int]] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        self.ended.callback((self.out, self.err, -1 if code is None else code))


async def run_client(
    test: TestCase, *args: str, stdin: bytes = b""
) -> tuple[str, str, int]:
    """
    Run C{python -m twisted_echo.client ARGS} without blocking the reactor.

    @return: its standard output, standard error and exit status.
    """
    collect = _Collect(stdin)
    process = reactor.spawnProcess(
        collect,
        sys.executable,
        [sys.executable, "-m", "twisted_echo.client", *args],
        env=dict(os.environ),
    )
    timer = reactor.callLater(PROCESS_TIMEOUT, process.signalProcess, "KILL")
    try:
        out, err, code = await collect.ended
    finally:
        if timer.active():
            timer.cancel()
    return out.decode(), err.decode(), code


class OptionTests(TestCase):
    def parse(self, *args: str) -> object:
        return build_parser().parse_args(list(args))

    def test_load_defaults(self) -> None:
        config = load_config(self.parse("load", "tcp:127.0.0.1:7"))  # type: ignore[arg-type]
        self.assertEqual((config.connections, config.size, config.mode), (1, 64, "rr"))

    def test_udp_needs_udp_mode(self) -> None:
        for args in (
            ("load", "udp:127.0.0.1:7"),
            ("load", "tcp:127.0.0.1:7", "--mode", "udp"),
            ("load", "udp:127.0.0.1:7", "--mode", "udp", "--service", "upper"),
            ("load", "udp:127.0.0.1:7", "--mode", "udp", "--size", "70000"),
        ):
            e = self.assertRaises(
                ClientUsageError,
                load_config,
                self.parse(*args),  # type: ignore[arg-type]
            )
            self.assertNotIn("\n", str(e))

    def test_bad_numbers(self) -> None:
        for args in (
            ("load", "x", "-c", "0"),
            ("load", "x", "--duration", "-1"),
            ("load", "x", "--size", "big"),
            ("check", "x", "--timeout", "nan"),
        ):
            self.assertRaises(SystemExit, self.parse, *args)


class ProcessTests(TestCase):
    """
    The command as users run it (each test starts one client process).
    """

    async def test_chat_with_upper(self) -> None:
        port = serve_tcp(self, UpperFactory(reactor))
        out, err, code = await run_client(
            self, "chat", f"tcp:127.0.0.1:{port}", stdin="hello\nstraße\n".encode()
        )
        self.assertEqual((out, err, code), ("HELLO\nSTRASSE\n", "", 0))

    async def test_load_mismatch_exits_non_zero(self) -> None:
        port = serve_tcp(self, Factory.forProtocol(CorruptEcho))
        out, err, code = await run_client(
            self,
            "load",
            f"tcp:127.0.0.1:{port}",
            "--duration",
            "0.3",
            "--requests",
            "100",
            "--json",
        )
        self.assertEqual(code, 1, err)
        report = json.loads(out)
        self.assertEqual(report["mismatches"], 1)
        self.assertFalse(report["ok"])

    async def test_check_fails_against_wire_echo(self) -> None:
        port = serve_tcp(self, Factory.forProtocol(wire.Echo))
        out, err, code = await run_client(self, "check", f"tcp:127.0.0.1:{port}")
        self.assertEqual(code, 1, err)
        fails = [line for line in out.splitlines() if " FAIL " in line]
        self.assertTrue(fails, out)
        for line in fails:
            self.assertTrue(line.startswith(tuple(HALF_CLOSE_CHECKS)), line)
        self.assertIn(" of 6 checks FAILED", out.splitlines()[-1])

    async def test_user_errors_are_one_line(self) -> None:
        listening = reactor.listenTCP(0, Factory.forProtocol(wire.Echo))
        free = listening.getHost().port
        await listening.stopListening()
        for args, status, words in [
            (("load", "tcp:127.0.0.1:nope"), 2, "bad endpoint 'tcp:127.0.0.1:nope'"),
            (("check", "bogus:thing"), 2, "bad endpoint 'bogus:thing'"),
            (("load", "tcp:127.0.0.1:7", "-c", "0"), 2, "--connections"),
            (("chat", f"tcp:127.0.0.1:{free}"), 1, "connection refused"),
        ]:
            out, err, code = await run_client(self, *args)
            self.assertEqual(code, status, (args, err))
            self.assertEqual(out, "")
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertIn(words, err)
            self.assertTrue(err.startswith("sockecho-client"), err)
