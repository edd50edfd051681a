"""
Integration tests of the real server: C{twistd -n sockecho} run as a separate
process and driven by real clients (telnet, netcat) and plain sockets.

Every server listens on port 0 on 127.0.0.1 and reports the ports it got in
its log; nothing here uses a fixed port. Each test starts its own server and
kills it in clean-up. The tests are synchronous (blocking subprocesses and
sockets with timeouts), so they run the same under trial and pytest.

A client program a test needs (telnet, OpenBSD netcat) is installed by CI;
outside CI a missing one skips the test, with C{CI} set it fails it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import select
import signal
import socket
import subprocess
import time
import unittest as pyunit
from collections.abc import Sequence

from twisted.trial import unittest

from tests.process import (
    AYT,
    BANNER,
    CLEAN_SIGTERM_EXIT,
    DO,
    DONT,
    ECHO,
    HOST,
    IAC,
    IO_TIMEOUT,
    MB,
    NAWS,
    NOP,
    SGA,
    TTYPE,
    TWISTD,
    WILL,
    WONT,
    RunningServer,
    _is_openbsd_netcat,
    any_port_args,
    child_env,
    missing,
    require_tool,
    run_twistd,
    shared_server,
    start_server,
    tcp_exchange,
    temp_dir,
    udp_socket,
)


class TelnetTests(unittest.TestCase):
    """
    A real telnet session against the welcome service.
    """

    def test_session(self) -> None:
        """
        telnet shows the banner, C{OK...} and each line typed, and quits by
        its escape character. telnet's option negotiation (forced with a
        C{-PORT} port, and again by C{mode character}) and an C{AYT} command
        never come back as text.
        """
        telnet = require_tool(self, "telnet")
        try:
            import pexpect
        except ImportError:
            missing(self, "pexpect is not installed", "pip install pexpect")

        server = shared_server()
        port = server.ports["welcome"]
        transcript = io.BytesIO()
        # "-PORT" makes telnet negotiate options as on the telnet port.
        child = pexpect.spawn(
            telnet, ["--", HOST, f"-{port}"], timeout=IO_TIMEOUT, env=child_env()
        )
        self.addCleanup(child.close, True)
        child.logfile_read = transcript
        child.expect_exact("Escape character is '^]'.")
        child.expect(re.escape(BANNER) + rb"\r+\n")
        child.sendline("hi")
        child.expect(rb"\nOK\.\.\.hi\r+\n")
        child.send("\x1d")
        child.expect_exact("telnet> ")
        child.sendline("send ayt")
        child.send("\x1d")
        child.expect_exact("telnet> ")
        child.sendline("mode character")
        child.sendline("second line")
        child.expect(rb"\nOK\.\.\.second line\r+\n")
        child.send("\x1d")
        child.expect_exact("telnet> ")
        child.sendline("quit")
        child.expect(pexpect.EOF)
        child.close()
        self.assertEqual(child.exitstatus, 0, transcript.getvalue())

        text = transcript.getvalue()
        garbage = re.findall(rb"[^\x20-\x7e\r\n]", text)
        self.assertEqual(garbage, [], f"non-text bytes shown by telnet: {text!r}")
        replies = re.findall(rb"OK\.\.\.[^\r\n]*", text)
        self.assertEqual(replies, [b"OK...hi", b"OK...second line"], text)

        # The server did get telnet commands, not only the 16 text bytes, so
        # the check above is not vacuous.
        closed = server.wait_for(r"welcome connection from .* closed: (\d+) bytes in")
        self.assertGreater(int(closed.group(1)), len(b"hi\r\nsecond line\r\n"))

    def test_negotiation_bytes_not_echoed(self) -> None:
        """
        The option negotiation and commands a telnet client sends (seen here
        as raw bytes, since telnet itself would swallow any that came back)
        get telnet replies, never text: the text the server sends is exactly
        the banner and one C{OK...} line per line, and every command it
        sends is a refusal (C{WONT}/C{DONT}).
        """
        server = shared_server()
        request = (
            bytes([IAC, DO, SGA, IAC, WILL, TTYPE, IAC, WILL, NAWS, IAC, DO, ECHO])
            + b"hi\r\n"
            + bytes([IAC, AYT])
            + b"h"
            + bytes([IAC, NOP])
            + b"o\r\n"
        )
        reply = tcp_exchange(server.ports["welcome"], request)
        commands = re.findall(rb"\xff[\xfb-\xfe].", reply, re.S)
        text = re.sub(rb"\xff[\xfb-\xfe].", b"", reply, flags=re.S)
        self.assertEqual(text, BANNER + b"\r\nOK...hi\r\nOK...ho\r\n")
        self.assertTrue(commands, reply)
        self.assertEqual({c[1] for c in commands} - {WONT, DONT}, set(), reply)


class NetcatTests(unittest.TestCase):
    """
    OpenBSD netcat (C{nc -N}: shut down sending after end of input) against
    the TCP services.
    """

    def setUp(self) -> None:
        self.nc = require_tool(self, "nc", _is_openbsd_netcat)
        self.server = shared_server()

    def netcat(self, service: str, data: bytes) -> bytes:
        """
        Pipe C{data} through C{nc -N} to C{service}.

        @return: what nc printed.
        """
        directory = temp_dir(self)
        path = os.path.join(directory, "input")
        with open(path, "wb") as f:
            f.write(data)
        with open(path, "rb") as stdin:
            result = subprocess.run(
                [self.nc, "-N", HOST, str(self.server.ports[service])],
                stdin=stdin,
                capture_output=True,
                timeout=30,
            )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def test_echo_megabyte(self) -> None:
        """
        A 1 MB file sent with C{nc -N} comes back byte for byte.
        """
        data = os.urandom(MB)
        reply = self.netcat("echo", data)
        self.assertEqual(len(reply), len(data))
        self.assertEqual(
            hashlib.sha256(reply).hexdigest(), hashlib.sha256(data).hexdigest()
        )

    def test_upper(self) -> None:
        """
        upper upper-cases UTF-8 text the Unicode way.
        """
        reply = self.netcat("upper", "hello straße\n".encode())
        self.assertEqual(reply, b"HELLO STRASSE\n")

    def test_welcome_lines(self) -> None:
        """
        welcome sends its banner, then answers lines ended by C{\\n} and by
        C{\\r\\n} alike, each reply ended by C{\\r\\n}.
        """
        reply = self.netcat("welcome", b"first\nsecond\r\n")
        self.assertEqual(reply, BANNER + b"\r\nOK...first\r\nOK...second\r\n")


class UDPTests(unittest.TestCase):
    """
    UDP echo over a real socket.
    """

    def test_largest_datagram(self) -> None:
        """
        A 65507-byte datagram (the IPv4 maximum) comes back whole, from the
        address it was sent to.
        """
        server = shared_server()
        address = (HOST, server.ports["udp"])
        sock = udp_socket(self)
        data = os.urandom(65507)
        sock.sendto(data, address)
        reply, source = sock.recvfrom(65536)
        self.assertEqual(source, address)
        self.assertEqual(len(reply), len(data))
        self.assertEqual(reply, data)

    def test_echo_port_source_not_answered(self) -> None:
        """
        A datagram from source port 7 (echo) is not answered, so two echo
        services cannot bounce a datagram forever; the server counts it as
        dropped, and keeps answering other senders.
        """
        looped = udp_socket(self, timeout=1.0)
        try:
            looped.bind((HOST, 7))
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM, errno.EADDRINUSE):
                self.skipTest(f"cannot bind UDP {HOST}:7 as the sender: {e}")
            raise
        server = start_server(self)
        address = (HOST, server.ports["udp"])
        looped.sendto(b"loop?", address)
        with self.assertRaises(socket.timeout):
            looped.recvfrom(65536)

        other = udp_socket(self)
        other.sendto(b"ping", address)
        self.assertEqual(other.recvfrom(65536), (b"ping", address))

        server.stop()
        udp_lines = [line for line in server.output if "] udp: " in line]
        self.assertEqual(len(udp_lines), 1, server.output)
        self.assertIn("dropped[loop_port]=1", udp_lines[0])
        self.assertIn("datagrams_in=2", udp_lines[0])
        self.assertIn("datagrams_out=1", udp_lines[0])


class FlowControlTests(unittest.TestCase):
    """
    A client that sends to echo but never reads.
    """

    LIMIT = 200 * MB
    MAX_SECONDS = 30.0
    BLOCKED_SECONDS = 2.0
    ACCEPTED_LIMIT = 64 * MB

    def flood(self, sock: socket.socket) -> tuple[int, str]:
        """
        Send on the non-blocking C{sock} until sending has been blocked for
        L{BLOCKED_SECONDS}, or L{LIMIT} bytes were sent, or L{MAX_SECONDS}
        passed.

        @return: the number of bytes sent and their SHA-256.
        """
        chunk = bytes(range(256)) * 1024
        digest = hashlib.sha256()
        sent = 0
        start = last_progress = time.monotonic()
        while sent < self.LIMIT:
            now = time.monotonic()
            if now - last_progress >= self.BLOCKED_SECONDS:
                break
            if now - start >= self.MAX_SECONDS:
                break
            _, writable, _ = select.select([], [sock], [], 0.1)
            if not writable:
                continue
            offset = sent % len(chunk)
            piece = chunk[offset:] + chunk[:offset]
            try:
                n = sock.send(piece[: self.LIMIT - sent])
            except BlockingIOError:
                continue
            digest.update(piece[:n])
            sent += n
            last_progress = time.monotonic()
        return sent, digest.hexdigest()

    def test_sender_that_never_reads(self) -> None:
        """
        The server stops reading from a client that does not read its echo:
        the client's sends block long before 200 MB, another client is
        served promptly meanwhile, and once the first client reads it gets
        every byte it sent.
        """
        server = start_server(self)
        port = server.ports["echo"]

        flooder = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
        self.addCleanup(flooder.close)
        flooder.setblocking(False)
        sent, sent_digest = self.flood(flooder)

        self.assertLess(
            sent,
            self.ACCEPTED_LIMIT,
            f"the server accepted {sent / MB:.1f} MB from a client that never reads",
        )

        # Promptly: within a 2 s deadline (tcp_exchange fails past it).
        self.assertEqual(
            tcp_exchange(port, b"still there?", timeout=2.0), b"still there?"
        )

        # Nothing was lost while the server held back.
        flooder.settimeout(IO_TIMEOUT)
        flooder.shutdown(socket.SHUT_WR)
        received = 0
        digest = hashlib.sha256()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            data = flooder.recv(MB)
            if not data:
                break
            received += len(data)
            digest.update(data)
        self.assertEqual(received, sent)
        self.assertEqual(digest.hexdigest(), sent_digest)


class ListenFailureTests(unittest.TestCase):
    """
    A port that is already in use.
    """

    def assert_busy(self, service: str, description: str) -> None:
        result = run_twistd(self, *any_port_args(**{service: description}))
        self.assertEqual(
            result.stderr,
            f"sockecho: cannot listen on {description}: address already in use\n",
        )
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertNotIn("Traceback", result.stdout)

    def test_tcp_port_in_use(self) -> None:
        """
        A second server on the TCP port the first one bound prints one line
        naming the address to standard error and exits 1; the first server
        keeps serving.
        """
        server = shared_server()
        port = server.ports["echo"]
        self.assert_busy("echo", f"tcp:{port}:interface={HOST}")
        self.assertEqual(tcp_exchange(port, b"alive"), b"alive")

    def test_udp_port_in_use(self) -> None:
        """
        The same for a busy UDP port.
        """
        server = shared_server()
        self.assert_busy("udp", f"udp:{server.ports['udp']}:interface={HOST}")


class BadOptionTests(pyunit.TestCase):
    """
    Bad command-line options: exit status 1, no traceback, and a last line
    of output that names what is wrong.
    """

    def assert_rejected(self, args: Sequence[str], *named: str) -> None:
        result = run_twistd(self, *args)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        lines = result.stdout.strip().splitlines()
        self.assertTrue(lines, result.stderr)
        last = lines[-1]
        self.assertTrue(last.startswith(TWISTD + " -n: "), last)
        for word in named:
            self.assertIn(word, last)

    def test_unknown_endpoint_type(self) -> None:
        self.assert_rejected(
            ["--echo", "bogus:1"],
            "--echo",
            "'bogus:1'",
            "Unknown endpoint type: 'bogus'",
        )

    def test_bad_port(self) -> None:
        self.assert_rejected(["--echo", "tcp:notaport"], "--echo", "'notaport'")

    def test_bad_udp_port(self) -> None:
        self.assert_rejected(["--udp", "udp:x"], "--udp", "'x'")

    def test_max_line_not_a_number(self) -> None:
        """
        The message names the option, not only the value.
        """
        self.assert_rejected(["--max-line=x"], "max-line", "'x'")

    def test_max_line_zero(self) -> None:
        self.assert_rejected(["--max-line=0"], "--max-line", "0")


class ShutdownTests(unittest.TestCase):
    """
    Stopping the server.
    """

    def test_sigterm(self) -> None:
        """
        SIGTERM stops the server with exit status 0, after a log line per
        service with what it did.
        """
        server = start_server(self)
        mark = len(server.output)
        self.assertEqual(tcp_exchange(server.ports["echo"], b"hello"), b"hello")
        self.assertEqual(tcp_exchange(server.ports["upper"], b"hello"), b"HELLO")
        self.assertEqual(
            tcp_exchange(server.ports["welcome"], b"hi\n"),
            BANNER + b"\r\nOK...hi\r\n",
        )
        sock = udp_socket(self)
        sock.sendto(b"ping", (HOST, server.ports["udp"]))
        self.assertEqual(sock.recv(100), b"ping")
        for service in ("echo", "upper", "welcome"):
            server.wait_for(rf"\] {service} connection from .* closed", start=mark)

        welcome_out = len(BANNER + b"\r\nOK...hi\r\n")
        status = server.stop(signal.SIGTERM)
        self.assertIn(status, CLEAN_SIGTERM_EXIT, server.errors)
        self.assertEqual(server.errors, [])
        self.assertNotIn("Traceback", "\n".join(server.output))
        # Stopped by twistd's handler, not killed by the signal's default.
        self.assertRegex(server.output[-1], r"\] Server Shut Down\.$")
        summaries = {}
        for line in server.output:
            match = re.search(r"\] (echo|upper|welcome|udp): (.*)$", line)
            if match:
                summaries[match.group(1)] = match.group(2)
        self.assertEqual(
            summaries,
            {
                "echo": "connections=1 bytes_in=5 bytes_out=5",
                "upper": "connections=1 bytes_in=5 bytes_out=5",
                "welcome": f"connections=1 bytes_in=3 bytes_out={welcome_out}",
                "udp": "bytes_in=4 bytes_out=4 datagrams_in=1 datagrams_out=1",
            },
        )


class ExposureTests(pyunit.TestCase):
    """
    A WARNING names each listener open beyond loopback. The servers here
    bind every interface but only loopback is ever connected to.
    """

    EXPOSED = r"\] (\w+) listening on (\S+) is open beyond loopback \(([^)]*)\)"

    def exposed(self, server: RunningServer) -> list[tuple[str, str, str]]:
        return [
            (m.group(1), m.group(2), m.group(3))
            for line in server.output
            if (m := re.search(self.EXPOSED, line))
        ]

    def test_every_interface_warns(self) -> None:
        """
        C{--echo tcp:0} and C{--metrics tcp:0} (no C{interface=}): a warning
        each, naming the address; the loopback listeners none. Echo serves
        on 127.0.0.1 as before.
        """
        server = RunningServer(
            self, [*any_port_args(echo="tcp:0"), "--metrics", "tcp:0"]
        )
        match = server.wait_for(
            r"\[twisted_echo\.listening\.listen#warn\] echo listening on tcp:0\.0\.0\."
                r"0:(\d+)"
            r" is open beyond loopback \(every IPv4 interface\); give the endpoint"
            r" interface=127\.0\.0\.1 to keep it to this host$"
        )
        server.wait_for(r"#warn\] metrics listening on tcp:0\.0\.0\.0:\d+ is open")
        server.wait_for(r"\] udp listening on udp:127\.0\.0\.1:\d+$")
        self.assertEqual(tcp_exchange(int(match.group(1)), b"local"), b"local")
        self.assertEqual(
            sorted(name for name, _, _ in self.exposed(server)), ["echo", "metrics"]
        )

    def test_loopback_only_does_not_warn(self) -> None:
        server = start_server(self, ["--metrics", f"tcp:0:interface={HOST}"])
        server.wait_for(r"\] metrics listening on tcp:127\.0\.0\.1:\d+$")
        self.assertEqual(tcp_exchange(server.ports["echo"], b"x"), b"x")
        self.assertEqual(self.exposed(server), [])

    def test_workers_warn_once(self) -> None:
        """
        With C{--workers 2} the supervisor warns once for the listener;
        the workers, which listen on the same socket, do not.
        """
        server = RunningServer(self, [*any_port_args(echo="tcp:0"), "--workers", "2"])
        port = int(
            server.wait_for(r"#warn\] echo listening on tcp:0\.0\.0\.0:(\d+)").group(1)
        )
        for number in (1, 2):
            server.wait_for(rf"\[worker {number} twisted_echo\.listening\."
                rf"listen#info\] udp")
        self.assertEqual(tcp_exchange(port, b"w"), b"w")
        self.assertEqual(
            self.exposed(server),
            [("echo", f"tcp:0.0.0.0:{port}", "every IPv4 interface")],
        )
