# -*- test-case-name: tests.test_activation -*-
"""
Tests for L{twisted_echo.listening.activation}: socket activation's
listener strings, the environment systemd sets, and adopting the sockets
it passed. The real-process tests (C{systemd-socket-activate} starting
twistd) are in L{tests.test_systemd}.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.python import usage
from twisted.trial import unittest

from tests.test_systemd import ROOT, bound_udp, listening_tcp
from twisted_echo.app import options as tap
from twisted_echo.listening.activation import (
    InheritedSocket,
    SystemdAddress,
    SystemdSocketError,
    SystemdStreamEndpoint,
    activation_environment,
    adoptable_socket,
    choose_socket,
    inherited_sockets,
    is_systemd_description,
    parse_systemd_description,
)


class DescriptionTests(unittest.TestCase):
    """
    L{parse_systemd_description} and the options that take it.
    """

    def test_forms(self) -> None:
        self.assertEqual(
            parse_systemd_description("systemd:index=2"), SystemdAddress(2)
        )
        self.assertEqual(
            parse_systemd_description("systemd:name=echo"), SystemdAddress(name="echo")
        )
        self.assertEqual(
            parse_systemd_description("systemd:domain=INET:index=0"),
            SystemdAddress(0, None, "INET"),
        )
        self.assertEqual(
            parse_systemd_description("systemd:name=web:domain=inet6"),
            SystemdAddress(None, "web", "INET6"),
        )
        self.assertTrue(is_systemd_description("systemd:index=0"))
        self.assertFalse(is_systemd_description("tcp:7007"))

    def test_errors(self) -> None:
        for description, message in [
            ("systemd:", "give exactly one of index=N and name=NAME"),
            ("systemd:index=0:name=a", "give exactly one of index=N and name=NAME"),
            ("systemd:index=x", "index= takes a number from 0, not 'x'"),
            ("systemd:index=-1", "index= takes a number from 0, not '-1'"),
            ("systemd:name=", "name= is empty"),
            ("systemd:indx=0", "unknown parameter 'indx'"),
            ("systemd:0", "systemd: takes index=N or name=NAME, not '0'"),
            ("systemd:index=0:index=1", "index= given twice"),
            (
                "systemd:index=0:domain=IPX",
                "domain= takes INET, INET6, UNIX, not 'IPX'",
            ),
        ]:
            with self.assertRaises(ValueError) as caught:
                parse_systemd_description(description)
            self.assertEqual(str(caught.exception), message, description)

    def test_options(self) -> None:
        """
        C{--echo}, C{--upper}, C{--welcome}, C{--udp} and C{--metrics} take
        C{systemd:} forms; a bad one is a usage error naming it. Parsing
        does not look for the sockets (that is listening's work).
        """
        config = tap.Options()
        config.parseOptions(
            ["--echo", "systemd:index=0", "--udp", "systemd:name=udp"]
            + ["--metrics", "systemd:name=metrics"]
        )
        self.assertEqual(config.listeners["udp"], ["systemd:name=udp"])
        with self.assertRaises(usage.UsageError) as caught:
            tap.Options().parseOptions(["--udp", "systemd:index=one"])
        self.assertEqual(
            str(caught.exception),
            "bad address for --udp 'systemd:index=one': index= takes a number "
            "from 0, not 'one'",
        )


def environment(
    count: int, names: str | None = None, pid: int | None = None
) -> dict[str, str]:
    env = {"LISTEN_FDS": str(count), "LISTEN_PID": str(pid or os.getpid())}
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    return env


class InheritedSocketsTests(unittest.TestCase):
    """
    L{inherited_sockets} reads the environment as sd_listen_fds(3) does.
    """

    def test_without_names(self) -> None:
        """
        Without C{LISTEN_FDNAMES} (systemd before 227, the activate tool
        without C{--fdname}) every socket is there, named C{unknown}.
        """
        self.assertEqual(
            inherited_sockets(environment(2)),
            [InheritedSocket(0, 3, "unknown"), InheritedSocket(1, 4, "unknown")],
        )

    def test_with_names(self) -> None:
        self.assertEqual(
            inherited_sockets(environment(2, "echo:udp")),
            [InheritedSocket(0, 3, "echo"), InheritedSocket(1, 4, "udp")],
        )

    def test_problems(self) -> None:
        for env, message in [
            ({}, "no socket inherited from systemd (LISTEN_FDS is not set"),
            ({"LISTEN_FDS": "1"}, "LISTEN_FDS is set but LISTEN_PID is not"),
            (environment(1, pid=1), "the inherited sockets are not this process's"),
            (
                environment(1, "a:b"),
                "LISTEN_FDNAMES names 2 socket(s) but LISTEN_FDS is 1",
            ),
            ({**environment(1), "LISTEN_FDS": "x"}, "LISTEN_FDS is 'x', not a number"),
        ]:
            with self.assertRaises(SystemdSocketError) as caught:
                inherited_sockets(env)
            self.assertTrue(str(caught.exception).startswith(message), caught.exception)

    def test_choose(self) -> None:
        sockets = inherited_sockets(environment(3, "a:b:b"))
        self.assertEqual(choose_socket(SystemdAddress(2), sockets).fd, 5)
        self.assertEqual(choose_socket(SystemdAddress(name="a"), sockets).fd, 3)
        for address, message in [
            (
                SystemdAddress(3),
                "no inherited socket 3: systemd passed 3 (index= counts from 0)",
            ),
            (
                SystemdAddress(name="c"),
                "no inherited socket is named 'c' (names: 'a', 'b', 'b')",
            ),
            (
                SystemdAddress(name="b"),
                "2 inherited sockets are named 'b' (indexes 1, 2): use index=",
            ),
        ]:
            with self.assertRaises(SystemdSocketError) as caught:
                choose_socket(address, sockets)
            self.assertEqual(str(caught.exception), message)

    def test_environment_taken_by_twisted(self) -> None:
        """
        Importing L{twisted.internet.endpoints} takes C{LISTEN_PID} and
        C{LISTEN_FDS} out of C{os.environ}; the sockets are still found,
        from the environment the process started with.
        """
        code = (
            "import os, twisted.internet.endpoints\n"
            "from twisted_echo.listening.activation import inherited_sockets\n"
            "print('LISTEN_FDS' in os.environ, inherited_sockets())\n"
        )
        shim = (
            "import os, sys\n"
            "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='2')\n"
            "os.execv(sys.executable, [sys.executable, '-c', sys.argv[1]])\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", shim, code],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            result.stdout.strip(),
            "False [InheritedSocket(index=0, fd=3, name='unknown'), "
            "InheritedSocket(index=1, fd=4, name='unknown')]",
        )

    def test_environment_given_wins(self) -> None:
        env = environment(1)
        self.assertIs(activation_environment(env), env)


class AdoptTests(unittest.TestCase):
    """
    L{adoptable_socket} checks the socket's kind and prepares it;
    L{SystemdStreamEndpoint} adopts it.
    """

    def inherit(
        self, sock: socket.socket, address: SystemdAddress, kind: int
    ) -> object:
        """
        Pretend C{sock} is the one inherited socket, whatever its
        descriptor number.
        """
        fd = sock.fileno()
        env = environment(1)
        import twisted_echo.listening.activation as activation

        self.patch(activation, "SD_LISTEN_FDS_START", fd)
        return adoptable_socket(address, kind, env)

    def test_stream(self) -> None:
        sock = listening_tcp(self)
        sock.setblocking(True)
        os.set_inheritable(sock.fileno(), True)
        found = self.inherit(sock, SystemdAddress(0), socket.SOCK_STREAM)
        self.assertEqual(found.family, socket.AF_INET)  # type: ignore[attr-defined]
        self.assertFalse(os.get_blocking(sock.fileno()))
        self.assertFalse(os.get_inheritable(sock.fileno()))

    def test_datagram(self) -> None:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(("::1", 0))
        found = self.inherit(sock, SystemdAddress(0), socket.SOCK_DGRAM)
        self.assertEqual(found.family, socket.AF_INET6)  # type: ignore[attr-defined]

    def test_wrong_kinds(self) -> None:
        unbound = socket.socket()
        self.addCleanup(unbound.close)
        udp = bound_udp(self)
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(unix.close)
        for sock, kind, message in [
            (unbound, socket.SOCK_STREAM, "is not listening (a connection from an"),
            (udp, socket.SOCK_STREAM, "is a datagram socket, not a stream one"),
            (unix, socket.SOCK_DGRAM, "is a UNIX datagram socket, not UDP"),
        ]:
            with self.assertRaises(SystemdSocketError) as caught:
                self.inherit(sock, SystemdAddress(0), kind)
            self.assertIn(message, str(caught.exception))

    def test_not_a_socket(self) -> None:
        pipe_r, pipe_w = os.pipe()
        self.addCleanup(os.close, pipe_r)
        self.addCleanup(os.close, pipe_w)
        import twisted_echo.listening.activation as activation

        self.patch(activation, "SD_LISTEN_FDS_START", pipe_r)
        with self.assertRaises(SystemdSocketError) as caught:
            adoptable_socket(SystemdAddress(0), socket.SOCK_STREAM, environment(1))
        self.assertIn("is not a socket", str(caught.exception))

    def test_endpoint(self) -> None:
        """
        The endpoint adopts the socket through C{adoptStreamPort} with its
        real family; a missing socket fails the L{Deferred}.
        """
        sock = listening_tcp(self)
        import twisted_echo.listening.activation as activation

        self.patch(activation, "SD_LISTEN_FDS_START", sock.fileno())
        reactor = MemoryReactor()
        factory = Factory.forProtocol(Protocol)
        endpoint = SystemdStreamEndpoint(reactor, SystemdAddress(0), environment(1))
        self.successResultOf(endpoint.listen(factory))
        self.assertEqual(
            reactor.adoptedPorts, [(sock.fileno(), socket.AF_INET, factory)]
        )
        missing_one = SystemdStreamEndpoint(reactor, SystemdAddress(1), environment(1))
        self.failureResultOf(missing_one.listen(factory), SystemdSocketError)
