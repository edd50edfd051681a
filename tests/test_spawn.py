"""
Tests for L{twisted_echo.testing.spawn}: a real sockecho in a child process on free
ports, its addresses, its start-up errors (bounded, with its last log
lines) and its stop (with the drain).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import unittest as pyunit

from tests.process import BANNER, HOST, IO_TIMEOUT, raised_within, tcp_exchange
from twisted_echo.testing.spawn import (
    SockechoProcess,
    StartError,
    options_from_keywords,
    start_sockecho,
)


def started(
    case: pyunit.TestCase, *options: str, **keywords: object
) -> SockechoProcess:
    server = start_sockecho(*options, **keywords)  # type: ignore[arg-type]
    case.addCleanup(server.kill)
    return server


class OptionsTests(pyunit.TestCase):
    def test_keywords(self) -> None:
        """
        Keywords become options: underscores are dashes, C{True} a flag,
        a list a repeated option, L{None} and C{False} nothing, and
        C{whoami=True} a whoami listener on a free port.
        """
        self.assertEqual(
            options_from_keywords(
                {
                    "max_line": 80,
                    "no_udp": True,
                    "no_upper": False,
                    "banner": None,
                    "echo": ["tcp:0", "unix:/s"],
                    "whoami": True,
                }
            ),
            [
                "--max-line",
                "80",
                "--no-udp",
                "--echo",
                "tcp:0",
                "--echo",
                "unix:/s",
                "--whoami",
                "tcp:0:interface=127.0.0.1",
            ],
        )


class ProcessTests(pyunit.TestCase):
    def test_every_service(self) -> None:
        """
        By default every service listens on a free port of 127.0.0.1, named
        as C{(host, port)} and as an endpoint string; they answer.
        """
        with start_sockecho() as server:
            for service in ("echo", "upper", "welcome"):
                host, port = getattr(server, service)
                self.assertEqual(host, HOST)
                self.assertEqual(
                    getattr(server, f"{service}_endpoint"), f"tcp:{HOST}:{port}"
                )
            self.assertEqual(server.udp_endpoint, f"udp:{HOST}:{server.udp[1]}")
            self.assertEqual(tcp_exchange(server.echo[1], b"hi"), b"hi")
            self.assertEqual(tcp_exchange(server.upper[1], b"hi"), b"HI")
            self.assertEqual(
                tcp_exchange(server.welcome[1], b"x\n"), BANNER + b"\r\nOK...x\r\n"
            )
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(IO_TIMEOUT)
                sock.sendto(b"ping", server.udp)
                self.assertEqual(sock.recv(10), b"ping")
            directory = server.directory
        self.assertIn(server.process.returncode, (0, -15))
        self.assertFalse(os.path.exists(directory))

    def test_options(self) -> None:
        """
        Options given replace the defaults of the services they name; the
        others still get a free port; keywords are options too. A
        C{--metrics} listener on a free port serves the records.
        """
        server = started(
            self, "--no-upper", "--whoami", f"udp:0:interface={HOST}", banner="Hey"
        )
        self.assertEqual(
            sorted(server.listeners), ["echo", "metrics", "udp", "welcome", "whoami"]
        )
        self.assertEqual(tcp_exchange(server.welcome[1], b""), b"Hey\r\n")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(IO_TIMEOUT)
            sock.sendto(b"?", server.whoami)
            self.assertEqual(json.loads(sock.recv(2000))["service"], "whoami")

    def test_tls(self) -> None:
        """
        C{tls=True}: echo, upper and welcome over TLS, with a certificate
        for 127.0.0.1 to trust (C{ca_file}); UDP echo as before.
        """
        server = started(self, tls=True)
        self.assertEqual(server.echo_endpoint, f"ssl:{HOST}:{server.echo[1]}")
        assert server.ca_file is not None
        context = ssl.create_default_context(cafile=server.ca_file)
        with socket.create_connection(server.upper, timeout=IO_TIMEOUT) as raw:
            with context.wrap_socket(raw, server_hostname=HOST) as tls:
                tls.sendall(b"tls")
                self.assertEqual(tls.recv(10), b"TLS")

    def test_drain_on_stop(self) -> None:
        """
        L{SockechoProcess.stop} drains: an idle connection left open is
        closed by the server and the process ends cleanly (not killed).
        """
        server = started(self)
        sock = socket.create_connection(server.echo, timeout=IO_TIMEOUT)
        self.addCleanup(sock.close)
        sock.sendall(b"x")
        self.assertEqual(sock.recv(1), b"x")
        self.assertIn(server.stop(), (0, -15))
        self.assertEqual(sock.recv(1), b"")
        self.assertEqual(server.stop(), server.process.returncode)

    def test_bad_option(self) -> None:
        """
        A bad option: L{StartError} at once, its first line the server's
        own error, then its last log lines; nothing is left running.
        """
        error = raised_within(10, lambda: start_sockecho("--max-line", "x"))
        self.assertIsInstance(error, StartError)
        first = str(error).splitlines()[0]
        self.assertEqual(
            first,
            "sockecho exited with status 1 before listening: twistd --nodaemon: "
            "Parameter type enforcement failed: --max-line takes a positive "
            "number of bytes, not 'x'",
        )
        self.assertIn("its last log lines:", str(error))

    def test_busy_port(self) -> None:
        """
        A busy port: L{StartError} naming it.
        """
        with socket.socket() as busy:
            busy.bind((HOST, 0))
            busy.listen()
            port = busy.getsockname()[1]
            with self.assertRaises(StartError) as caught:
                start_sockecho("--echo", f"tcp:{port}:interface={HOST}")
        self.assertIn(
            f"sockecho: cannot listen on tcp:{port}:interface={HOST}: "
            "address already in use",
            str(caught.exception).splitlines()[0],
        )

    def test_startup_timeout(self) -> None:
        """
        A server not listening within the start-up timeout is killed and
        reported within about that time.
        """
        error = raised_within(5, lambda: start_sockecho(startup_timeout=0.05))
        self.assertIsInstance(error, StartError)
        self.assertRegex(
            str(error), r"^sockecho did not start listening within 0\.05 s"
        )


class ImportCostTests(pyunit.TestCase):
    def test_no_twisted(self) -> None:
        """
        Importing the pytest plugin (and L{twisted_echo.testing.spawn}) imports
        nothing of Twisted: no reactor, no C{twisted.internet}.
        """
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys\n"
                "import twisted_echo.testing.pytest_plugin, twisted_echo.testing."
                    "spawn\n"
                "print(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.stdout.strip(), "[]", result.stderr)
