"""
Tests for L{twisted_echo.client.whoami}: C{sockecho-client whoami} against
sockecho's whoami service on loopback (TCP and UDP), and against a server
that is not one.
"""

from __future__ import annotations

import io
import json

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.loopback import listen_tcp
from twisted_echo.client.errors import ClientError
from twisted_echo.client.whoami import describe, run_whoami
from twisted_echo.services.echo import EchoFactory
from twisted_echo.services.whoami import WhoamiFactory, WhoamiUDP


class WhoamiClientTests(TestCase):
    async def test_one_answer_field_by_field(self) -> None:
        port = listen_tcp(self, WhoamiFactory(reactor))
        out = io.StringIO()
        status = await run_whoami(reactor, f"tcp:127.0.0.1:{port}", 1, 5, out)
        self.assertEqual(status, 0)
        lines = dict(line.split(None, 1) for line in out.getvalue().splitlines())
        self.assertEqual(json.loads(lines["client_host"]), "127.0.0.1")
        self.assertEqual(json.loads(lines["local"]), f"tcp:127.0.0.1:{port}")

    async def test_many_answers_counted_per_backend(self) -> None:
        port = listen_tcp(self, WhoamiFactory(reactor))
        out = io.StringIO()
        await run_whoami(reactor, f"tcp:127.0.0.1:{port}", 10, 5, out)
        text = out.getvalue()
        self.assertIn("10 answers from 1 backend(s):", text)
        self.assertRegex(text, r"\n\s+10  \S+ pid \d+\n")
        self.assertRegex(text, r"\n\s+10  127\.0\.0\.1\n")

    async def test_udp_and_json(self) -> None:
        port = reactor.listenUDP(0, WhoamiUDP(), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        out = io.StringIO()
        number = port.getHost().port
        await run_whoami(reactor, f"udp:127.0.0.1:{number}", 2, 5, out, as_json=True)
        replies = json.loads(out.getvalue())
        self.assertEqual(len(replies), 2)
        self.assertEqual(replies[0]["local"], f"udp:127.0.0.1:{number}")

    async def test_not_a_whoami_service_is_one_clear_error(self) -> None:
        port = listen_tcp(self, EchoFactory(reactor))
        e = await self.assertFailure(
            Deferred.fromCoroutine(
                run_whoami(reactor, f"tcp:127.0.0.1:{port}", 1, 2, io.StringIO())
            ),
            ClientError,
        )
        self.assertIn("no answer from", str(e))

    def test_describe_names_workers(self) -> None:
        replies = [
            {"host": "a", "pid": 1, "worker": 1, "client_host": "10.0.0.1"},
            {"host": "a", "pid": 2, "worker": 2, "client_host": "10.0.0.1"},
            {"host": "a", "pid": 2, "worker": 2, "client_host": "10.0.0.2"},
        ]
        text = describe(replies)
        self.assertIn("3 answers from 2 backend(s):", text)
        self.assertIn("      2  a pid 2 worker 2", text)
        self.assertIn("      1  10.0.0.2", text)
