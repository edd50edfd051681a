"""
Tests for L{twisted_echo.client.tls}: C{ssl:} endpoints of
C{sockecho-client}, the certificate checks and their one-line errors, and
C{check} over TLS (every row passes against sockecho; the half-close rows
fail against Twisted's own TLS, which closes on a close_notify).
"""

from __future__ import annotations

import io
import os

from OpenSSL import SSL
from twisted.internet import error, reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from tests.test_client_check import HALF_CLOSE_CHECKS
from tests.test_client_load import serve_tcp
from tests.test_client_main import run_client
from tests.tls_peers import HOST, make_certificate, serve_tls
from twisted_echo.client.check import run_check, run_checks
from twisted_echo.client.endpoints import EndpointError, stream_endpoint
from twisted_echo.client.errors import ClientError, ClientUsageError
from twisted_echo.client.tls import (
    TLSClientEndpoint,
    TLSSettings,
    TLSSettingsError,
    TLSTarget,
    explain_handshake_failure,
    parse_tls_endpoint,
)
from twisted_echo.listening.tls import StockTLSFactory
from twisted_echo.services.echo import EchoFactory


class ParseTests(TestCase):
    def test_forms(self) -> None:
        for text, expected in [
            ("ssl:127.0.0.1:7207", TLSTarget("127.0.0.1", 7207)),
            ("ssl:localhost:7207:hostname=echo.test",
             TLSTarget("localhost", 7207, "echo.test")),
            ("ssl:\\:\\:1:7207", TLSTarget("::1", 7207)),
            ("ssl:[::1]:7207:timeout=5", TLSTarget("::1", 7207, None, 5.0)),
            ("ssl:host=a.test:port=1:bindAddress=127.0.0.2",
             TLSTarget("a.test", 1, None, 30.0, "127.0.0.2")),
        ]:  # fmt: skip
            self.assertEqual(parse_tls_endpoint(text), expected, text)
        self.assertEqual(str(TLSTarget("::1", 7207)), "ssl:\\:\\:1:7207")

    def test_errors_are_one_line_naming_the_string(self) -> None:
        reactor_: object = object()
        for text, words in [
            ("ssl:localhost", "expected ssl:HOST:PORT"),
            ("ssl::7207", "empty host"),
            ("ssl:localhost:0", "is not 1-65535"),
            ("ssl:localhost:x", "is not 1-65535"),
            ("ssl:localhost:7:caCertsDir=/etc", "unknown parameter 'caCertsDir'"),
            ("ssl:localhost:7:timeout=-1", "not a positive number"),
            ("ssl:[::1:7", "unclosed '['"),
        ]:
            e = self.assertRaises(EndpointError, stream_endpoint, reactor_, text)
            self.assertIn(repr(text), str(e))
            self.assertIn(words, str(e))
            self.assertNotIn("\n", str(e))

    def test_stream_endpoint_is_tls(self) -> None:
        endpoint = stream_endpoint(reactor, "ssl:localhost:7207")
        assert isinstance(endpoint, TLSClientEndpoint)
        self.assertEqual(endpoint.creator.name, "localhost")
        named = stream_endpoint(
            reactor, "ssl:127.0.0.1:7207", TLSSettings(server_name="echo.test")
        )
        assert isinstance(named, TLSClientEndpoint)
        self.assertEqual(named.creator.name, "echo.test")

    def test_bad_ca_file(self) -> None:
        for path, words in [
            ("/nonexistent/ca.pem", "no such file"),
            (__file__, "no PEM certificate in it"),
        ]:
            e = self.assertRaises(
                TLSSettingsError,
                stream_endpoint,
                reactor,
                "ssl:localhost:7",
                TLSSettings(ca_file=path),
            )
            self.assertIsInstance(e, ClientUsageError)
            self.assertEqual(str(e), f"--ca {path!r}: {words}")


class ExplainTests(TestCase):
    def test_one_line_each(self) -> None:
        class Refused:
            verify_problem = "certificate not trusted: x"

        for reason, protocol, expected in [
            (SSL.Error([]), Refused(), "certificate not trusted: x"),
            (SSL.SysCallError(-1, "Unexpected EOF"), None,
             "the server closed the connection"),
            (SSL.Error([("SSL routines", "", "unexpected eof while reading")]),
             None, "the server closed the connection"),
            (SSL.Error([("SSL routines", "", "wrong version number")]), None,
             "wrong version number (is the server speaking TLS?)"),
            (SSL.Error([("SSL routines", "", "tlsv1 alert protocol version")]),
             None, "tlsv1 alert protocol version"),
            (error.ConnectionLost(), None, "the server closed the connection"),
            (ValueError("odd\nthing"), None, "odd"),
        ]:  # fmt: skip
            self.assertEqual(
                explain_handshake_failure(reason, protocol),
                f"TLS handshake failed: {expected}",
            )


class CheckOverTLSTests(TestCase):
    """
    C{check} over TLS 1.3, in process.
    """

    def setUp(self) -> None:
        self.certificate = make_certificate(self)

    def endpoint(self, port: int, **settings: object) -> object:
        return stream_endpoint(
            reactor,
            f"ssl:{HOST}:{port}",
            TLSSettings(**settings),  # type: ignore[arg-type]
        )

    async def test_sockecho_conforms(self) -> None:
        port = serve_tls(self, EchoFactory(reactor), self.certificate).getHost().port
        results = await run_checks(
            reactor,
            self.endpoint(port, ca_file=self.certificate.cert),  # type: ignore[arg-type]
            timeout=30,
        )
        self.assertEqual(len(results), 6)
        for result in results:
            self.assertTrue(result.passed, result)

    async def test_twisted_tls_fails_half_close(self) -> None:
        """
        The issue's reproduction: Twisted's own TLS answers a close_notify
        by closing at once, and the echo still owed is lost.
        """
        factory = StockTLSFactory(
            _server_options(self.certificate), False, EchoFactory(reactor), reactor
        )
        listening = reactor.listenTCP(0, factory, interface=HOST)
        self.addCleanup(listening.stopListening)
        results = await run_checks(
            reactor,
            self.endpoint(  # type: ignore[arg-type]
                listening.getHost().port, ca_file=self.certificate.cert
            ),
            timeout=30,
        )
        failed = {r.name for r in results if not r.passed}
        self.assertLessEqual({"1 MiB, half-close, sha256"}, failed)
        self.assertLessEqual(failed, HALF_CLOSE_CHECKS)
        detail = {r.name: r.detail for r in results}["20 MB, half-close, sha256"]
        self.assertIn("before the connection closed", detail)

    async def failure(self, port: int, tls: TLSSettings) -> str:
        e = await self.assertFailure(
            Deferred.fromCoroutine(
                run_check(
                    reactor, f"ssl:{HOST}:{port}", None, 10, io.StringIO(), tls=tls
                )
            ),
            ClientError,
        )
        text = str(e)
        self.assertNotIn("\n", text)
        return text

    async def test_untrusted_certificate(self) -> None:
        port = serve_tls(self, EchoFactory(reactor), self.certificate).getHost().port
        text = await self.failure(port, TLSSettings())
        self.assertEqual(
            text,
            f"cannot connect to ssl:{HOST}:{port}: TLS handshake failed: "
            "certificate not trusted: self-signed certificate (CN=localhost); "
            "--ca FILE trusts it; --insecure skips the check, for test "
            "certificates",
        )

    async def test_certificate_for_another_name(self) -> None:
        port = serve_tls(self, EchoFactory(reactor), self.certificate).getHost().port
        text = await self.failure(
            port, TLSSettings(ca_file=self.certificate.cert, server_name="echo.test")
        )
        self.assertIn(
            "TLS handshake failed: the certificate is for localhost, 127.0.0.1, "
            "not 'echo.test'",
            text,
        )

    async def test_insecure_and_system_store(self) -> None:
        """
        C{--insecure} accepts the self-signed certificate; so does the
        system's trust store when it holds it (C{SSL_CERT_FILE}).
        """
        port = serve_tls(self, EchoFactory(reactor), self.certificate).getHost().port
        for settings, environment in [
            (TLSSettings(insecure=True), {}),
            (TLSSettings(), {"SSL_CERT_FILE": self.certificate.cert}),
        ]:
            saved = dict(os.environ)
            os.environ.update(environment)
            try:
                out = io.StringIO()
                status = await run_check(
                    reactor, f"ssl:{HOST}:{port}", None, 30, out, tls=settings
                )
            finally:
                os.environ.clear()
                os.environ.update(saved)
            self.assertEqual(status, 0, out.getvalue())

    async def test_server_not_speaking_tls(self) -> None:
        port = serve_tcp(self, EchoFactory(reactor))
        text = await self.failure(port, TLSSettings(insecure=True))
        self.assertIn("TLS handshake failed: ", text)

    async def test_server_closing_at_once(self) -> None:
        class Closer(Protocol):
            def connectionMade(self) -> None:
                self.transport.loseConnection()  # type: ignore[union-attr]

        port = serve_tcp(self, Factory.forProtocol(Closer))
        text = await self.failure(port, TLSSettings(insecure=True))
        self.assertIn("TLS handshake failed: the server closed the connection", text)


class CommandTests(TestCase):
    """
    C{sockecho-client} processes over TLS against an in-process server.
    """

    def setUp(self) -> None:
        self.certificate = make_certificate(self)
        self.port = (
            serve_tls(self, EchoFactory(reactor), self.certificate).getHost().port
        )

    async def test_chat_and_load(self) -> None:
        endpoint = f"ssl:localhost:{self.port}"
        out, err, code = await run_client(
            self, "chat", endpoint, "--ca", self.certificate.cert, stdin=b"hello\n"
        )
        self.assertEqual((code, out), (0, "hello\n"), err)
        out, err, code = await run_client(
            self, "load", endpoint, "--insecure", "-c", "4", "-d", "0.3",
            "--mode", "stream", "--json",
        )  # fmt: skip
        self.assertEqual(code, 0, out + err)

    async def test_options_need_an_ssl_endpoint(self) -> None:
        for args, words in [
            (["check", f"tcp:{HOST}:{self.port}", "--insecure"],
             "--ca, --insecure and --servername are for ssl: endpoints"),
            (["check", f"ssl:{HOST}:{self.port}", "--insecure", "--ca", "x"],
             "--ca and --insecure contradict each other"),
        ]:  # fmt: skip
            out, err, code = await run_client(self, *args)
            self.assertEqual(code, 2)
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertIn(words, err)

    async def test_untrusted_is_one_line(self) -> None:
        out, err, code = await run_client(self, "check", f"ssl:{HOST}:{self.port}")
        self.assertEqual((code, out), (1, ""))
        [line] = err.splitlines()
        self.assertIn("certificate not trusted: self-signed certificate", line)


def _server_options(certificate: object) -> object:
    from twisted.internet.ssl import CertificateOptions, PrivateCertificate

    with open(certificate.cert, "rb") as c, open(certificate.key, "rb") as k:  # type: ignore[attr-defined]
        private = PrivateCertificate.loadPEM(c.read() + k.read())
    return CertificateOptions(
        privateKey=private.privateKey.original, certificate=private.original
    )
