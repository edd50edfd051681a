"""
The examples in C{examples/} run as their readers would run them: the
example test file under pytest (with the installed C{sockecho} fixture),
the embedding script as a program that exits by itself, the reverse-lines
service of docs/services.md over real sockets.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import unittest
from types import ModuleType
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.loopback import connect_stalled_reader, exchange, listen_tcp, wait_until
from twisted_echo.policies.limits import ConnectionLimits

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=EXAMPLES,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


class ExamplesTests(unittest.TestCase):
    def test_my_client(self) -> None:
        """
        C{pytest examples/test_my_client.py}: every test passes.
        """
        result = run(
            "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_client.py"
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertRegex(result.stdout, r"\b4 passed\b")

    def test_embed_echo(self) -> None:
        """
        C{python examples/embed_echo.py}: says where it listens, gets its
        message back and exits 0.
        """
        result = run("embed_echo.py")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertRegex(
            result.stdout,
            r"^echo listening on 127\.0\.0\.1:\d+\n"
            r"sent b'Hello, world', got back b'Hello, world'\n$",
        )


def load_reverse_service() -> ModuleType:
    """
    @return: C{examples/reverse_service.py}, imported as its readers would
        run it (the module docs/services.md shows).
    """
    path = os.path.join(EXAMPLES, "reverse_service.py")
    spec = importlib.util.spec_from_file_location("reverse_service", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ReverseServiceTests(TestCase):
    """
    C{examples/reverse_service.py}, the service docs/services.md writes
    against the service contract, over real sockets on 127.0.0.1: it gets
    half-close, limits and accounting from the stream base alone.
    """

    def setUp(self) -> None:
        self.module = load_reverse_service()

    def listen(self, **kw: Any) -> tuple[Any, int]:
        factory = self.module.ReverseFactory(reactor, **kw)
        return factory, listen_tcp(self, factory)

    async def test_lines_reversed_half_close_delivers_all(self) -> None:
        """
        Each line comes back reversed (UTF-8 characters, CR LF ended); a
        last line without LF is answered once the client half-closes, and
        every reply arrives before the close; the counters and the budget
        are given back.
        """
        factory, port = self.listen()
        lines = [b"abc\n", "h\u00e9llo \u4f60\u597d\r\n".encode(), b"x" * 1000 + b"\n"]
        payload = b"".join(lines * 200) + b"no end"
        client = await exchange(port, payload)
        expected = (
            b"cba\r\n" + "\u597d\u4f60 oll\u00e9h\r\n".encode() + b"x" * 1000 + b"\r\n"
        ) * 200 + b"dne on\r\n"
        self.assertEqual(b"".join(client.received), expected)
        await wait_until(lambda: not factory.open_protocols)
        counters = factory.counters
        self.assertEqual(
            (counters.bytes_in, counters.bytes_out), (len(payload), len(expected))
        )
        self.assertEqual(factory.budget.promised(), 0)

    async def test_line_limit(self) -> None:
        """
        An unfinished line over the example's limit gets one error line,
        then the connection closes.
        """
        _, port = self.listen()
        client = await exchange(port, b"ok\n" + b"y" * 2000)
        self.assertEqual(
            b"".join(client.received),
            b"ko\r\nERROR: line too long; closing connection\r\n",
        )

    async def test_connection_limit(self) -> None:
        """
        sockecho's connection limits apply unchanged: over
        C{max_connections} a client is told why in a line (the service
        asked for a refusal line), counted, and closed.
        """
        factory, port = self.listen(limits=ConnectionLimits(max_connections=1))
        first = await connect_stalled_reader(port)
        self.addCleanup(first.transport.abortConnection)
        await wait_until(lambda: factory.open_protocols)
        refused = await exchange(port, b"abc\n")
        self.assertEqual(
            b"".join(refused.received),
            b"ERROR: too many connections (max_connections); try again later\r\n",
        )
        self.assertEqual(factory.counters.refused["max_connections"], 1)


class ServicesDocTests(unittest.TestCase):
    """
    docs/services.md shows the example service as it is in
    C{examples/reverse_service.py}, and it is under 40 lines.
    """

    def test_doc_shows_the_module_code(self) -> None:
        with open(os.path.join(EXAMPLES, "reverse_service.py")) as f:
            module = f.read()
        start = module.index("# -- the service: start --")
        end = module.index("# -- the service: end --")
        code = module[start:end]
        doc_path = os.path.join(os.path.dirname(EXAMPLES), "docs", "services.md")
        with open(doc_path) as f:
            self.assertIn(code, f.read())
        self.assertLess(code.count("\n") - 1, 40)
