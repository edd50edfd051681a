"""
Tests for L{twisted_echo.listening.tlsextras}: an C{ssl:} listener's
C{clientCA=} (client certificates asked for and verified) and C{alpn=}
(RFC 7301), read from the description, and seen in the connection record
of a real client against a real sockecho (C{twistd} started with
L{twisted_echo.testing.spawn.start_sockecho}).
"""

from __future__ import annotations

import atexit
import datetime
import os
import shutil
import socket
import ssl
import tempfile
import unittest
from typing import Any, ClassVar

from twisted.python import usage

from twisted_echo.app.options import Options
from twisted_echo.listening.certificate import self_signed_certificate, write_pem
from twisted_echo.listening.endpoints import parse_description
from twisted_echo.listening.tlsextras import TLSExtras, split_tls_extras
from twisted_echo.records.schema import problems
from twisted_echo.testing.spawn import SockechoProcess, start_sockecho

IO_TIMEOUT = 10.0
CLIENT_NAME = "sockecho test client"


def make_ca(name: str) -> tuple[Any, Any]:
    """
    @return: a CA's C{(key, certificate)}, C{cryptography} objects.
    """
    return self_signed_certificate(name)


def make_client_certificate(ca: tuple[Any, Any], name: str) -> tuple[Any, Any]:
    """
    @return: C{(key, certificate)} of a client certificate named C{name}
        (its subject's CN) signed by C{ca}, for TLS client authentication.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key, ca_certificate = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sockecho"),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


class Files:
    """
    A temporary directory holding the server's certificate, a CA, a client
    certificate signed by it, and one signed by another CA.
    """

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="sockecho-tlsextras-")
        self.server_cert, self.server_key = self.write(
            "server", self_signed_certificate("localhost")
        )
        ca = make_ca("sockecho test CA")
        self.ca, _ = self.write("ca", ca)
        self.client_cert, self.client_key = self.write(
            "client", make_client_certificate(ca, CLIENT_NAME)
        )
        other = make_ca("another CA")
        self.stranger_cert, self.stranger_key = self.write(
            "stranger", make_client_certificate(other, "stranger")
        )

    def write(self, name: str, pair: tuple[Any, Any]) -> tuple[str, str]:
        cert = os.path.join(self.directory, f"{name}.pem")
        key = os.path.join(self.directory, f"{name}-key.pem")
        write_pem(pair[0], pair[1], cert, key)
        return cert, key

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class SplitTests(unittest.TestCase):
    """
    L{split_tls_extras} takes sockecho's parameters out of the description
    Twisted's parser reads.
    """

    def setUp(self) -> None:
        self.files = Files()
        self.addCleanup(self.files.remove)

    def test_none(self) -> None:
        text = "ssl:7207:privateKey=k.pem"
        self.assertEqual(
            split_tls_extras(parse_description(text)), (text, TLSExtras())
        )
        self.assertFalse(TLSExtras())

    def test_both_taken_out(self) -> None:
        inner, extras = split_tls_extras(
            parse_description(
                f"ssl:7207:privateKey=k.pem:clientCA={self.files.ca}"
                r":alpn=h2,http/1.1:interface=\:\:1"
            )
        )
        self.assertEqual(inner, r"ssl:7207:privateKey=k.pem:interface=\:\:1")
        self.assertEqual(extras, TLSExtras(self.files.ca, (b"h2", b"http/1.1")))

    def test_bad_alpn(self) -> None:
        for text in ("alpn=", "alpn=h2,,x", "alpn=" + "x" * 256):
            with self.assertRaises(ValueError) as raised:
                split_tls_extras(parse_description(f"ssl:0:{text}"))
            self.assertIn("alpn= takes protocol names", str(raised.exception))

    def test_bad_ca_file_is_one_line_at_parse(self) -> None:
        """
        A missing or non-PEM C{clientCA=} file: one line naming the option
        and the file, when the options are read.
        """
        missing = os.path.join(self.files.directory, "nope.pem")
        listener = (
            f"ssl:0:privateKey={self.files.server_key}:"
            f"certKey={self.files.server_cert}:clientCA="
        )
        for path, words in [
            (missing, f"clientCA={missing}: No such file or directory"),
            (self.files.ca.replace("ca.pem", "ca-key.pem"), "not a PEM file of CA"),
        ]:
            with self.assertRaises(usage.UsageError) as raised:
                Options().parseOptions(["--echo", listener + path])
            message = str(raised.exception)
            self.assertIn("bad address for --echo", message)
            self.assertIn(words, message)
            self.assertNotIn("\n", message)


#: The server of each test class, started by its first test and stopped
#: when the test process exits (trial runs no C{setUpClass}).
_SERVERS: dict[type, tuple[SockechoProcess, Files]] = {}


def _stop(server: SockechoProcess, files: Files) -> None:
    server.stop()
    files.remove()


class ClientCertificateTests(unittest.TestCase):
    """
    A real sockecho whose TLS echo asks for client certificates
    (C{clientCA=}) and offers ALPN (C{alpn=h2,http/1.1}); the record says
    what the client sent.
    """

    alpn: ClassVar[str] = "h2,http/1.1"

    def setUp(self) -> None:
        started = _SERVERS.get(type(self))
        if started is None:
            files = Files()
            listener = (
                f"ssl:0:interface=127.0.0.1:privateKey={files.server_key}:"
                f"certKey={files.server_cert}:clientCA={files.ca}:alpn={self.alpn}"
            )
            try:
                server = start_sockecho(
                    "--echo", listener, "--no-upper", "--no-welcome", "--no-udp"
                )
            except BaseException:
                files.remove()
                raise
            started = _SERVERS[type(self)] = (server, files)
            atexit.register(_stop, server, files)
        self.server, self.files = started
        self.server.reset_records()

    def connect(
        self, certificate: tuple[str, str] | None, protocols: list[str]
    ) -> ssl.SSLSocket:
        """
        @return: a TLS connection to the echo, with C{certificate} (paths
            of a certificate and its key) and the ALPN C{protocols} offered.
        """
        context = ssl.create_default_context(cafile=self.files.server_cert)
        if certificate is not None:
            context.load_cert_chain(*certificate)
        if protocols:
            context.set_alpn_protocols(protocols)
        raw = socket.create_connection(self.server.echo, timeout=IO_TIMEOUT)
        return context.wrap_socket(raw, server_hostname="localhost")

    def echo(self, sock: ssl.SSLSocket, data: bytes) -> bytes:
        sock.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = sock.recv(len(data) - len(got))
            if not chunk:
                break
            got += chunk
        # close_notify, sockecho's FIN over TLS; then sockecho's own.
        sock.unwrap().close()
        return got

    def test_client_certificate_and_alpn(self) -> None:
        """
        A client with a certificate of the CA, offering C{http/1.1}: the
        record's C{client_subject} is its certificate's subject and its
        C{alpn} the protocol the client was told, with the bytes it saw.
        """
        sock = self.connect(
            (self.files.client_cert, self.files.client_key), ["http/1.1"]
        )
        told = sock.selected_alpn_protocol()
        self.assertEqual(self.echo(sock, b"who am I"), b"who am I")
        [record] = self.server.wait_for(1)
        self.assertEqual(problems(record), [])
        self.assertEqual(told, "http/1.1")
        self.assertEqual(record["tls"]["alpn"], told)
        self.assertEqual(
            record["tls"]["client_subject"], f"/O=sockecho/CN={CLIENT_NAME}"
        )
        self.assertEqual(record["cause"], "client_fin")
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (8, 8))

    def test_server_preference(self) -> None:
        """
        A client offering C{http/1.1} then C{h2}: the listener's first
        choice, C{h2}, in what the client was told and in the record.
        """
        sock = self.connect(
            (self.files.client_cert, self.files.client_key), ["http/1.1", "h2"]
        )
        told = sock.selected_alpn_protocol()
        self.assertEqual(self.echo(sock, b"x"), b"x")
        [record] = self.server.wait_for(1)
        self.assertEqual((told, record["tls"]["alpn"]), ("h2", "h2"))

    def test_no_certificate_no_common_protocol(self) -> None:
        """
        A client with no certificate, offering a protocol the listener does
        not: served, without ALPN; the record's C{client_subject} and
        C{alpn} are null.
        """
        sock = self.connect(None, ["spdy/3"])
        told = sock.selected_alpn_protocol()
        self.assertEqual(self.echo(sock, b"anonymous"), b"anonymous")
        [record] = self.server.wait_for(1)
        self.assertIsNone(told)
        self.assertIsNone(record["tls"]["alpn"])
        self.assertIsNone(record["tls"]["client_subject"])
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (9, 9))

    def test_certificate_of_another_ca(self) -> None:
        """
        A client certificate that does not chain to C{clientCA=}: the
        handshake fails, the client gets no byte back, and its record (one)
        says C{tls_error} with no bytes.
        """
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            sock = self.connect(
                (self.files.stranger_cert, self.files.stranger_key), []
            )
            # TLS 1.3: the server's refusal arrives after the client's
            # handshake is over, on its first read.
            sock.sendall(b"let me in")
            sock.recv(100)
        record = self.server.expect_close("tls_error", "echo")
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (0, 0))
        self.assertEqual(len(self.server.records()), 1)
