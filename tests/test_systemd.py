"""
Tests for L{twisted_echo.operations.systemd}: socket activation (parsing, the
environment, adopting sockets) and sd_notify, in process and with the real
C{systemd-socket-activate} and a real C{AF_UNIX} notify socket.

The real-process tests open their listening sockets on port 0 of 127.0.0.1
and hand them to C{systemd-socket-activate}, which passes descriptors it
inherited (C{LISTEN_FDS}) on to the program it starts, as it does its own
C{--listen} ones, with C{LISTEN_FDNAMES} only when given C{--fdname}. It
starts the program on the first connection or datagram, which the program
then gets from the socket's queue.
"""

from __future__ import annotations

import array
import http.client
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import unittest as pyunit
from collections.abc import Mapping, Sequence
from pathlib import Path

from twisted.application.service import MultiService, Service
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.python import usage
from twisted.trial import unittest

from tests.process import (
    CLEAN_SIGTERM_EXIT,
    HOST,
    IO_TIMEOUT,
    STARTUP_TIMEOUT,
    TWISTD,
    RunningServer,
    any_port_args,
    child_env,
    require_tool,
    run_twistd,
    tcp_exchange,
    temp_dir,
    twistd_command,
    udp_socket,
)
from twisted_echo.app import options as tap
from twisted_echo.operations.systemd import (
    InheritedSocket,
    Notifier,
    NotifyingService,
    SystemdAddress,
    SystemdSocketError,
    SystemdStreamEndpoint,
    activation_environment,
    adoptable_socket,
    choose_socket,
    inherited_sockets,
    is_systemd_description,
    notify_address,
    parse_systemd_description,
    status_line,
)
from twisted_echo.policies.counters import ServiceCounters

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "contrib" / "systemd"

#: Run by the test's Python: puts the descriptors given in argv[1]
#: (comma-separated) at 3, 4, ..., says so in LISTEN_FDS and LISTEN_PID
#: (its own pid, which exec keeps), and execs the rest of argv.
ACTIVATION_SHIM = """\
import os, sys
fds = [int(fd) for fd in sys.argv[1].split(",")]
for i, fd in enumerate(fds):
    os.dup2(fd, 3 + i)
for fd in fds:
    if fd >= 3 + len(fds):
        os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(len(fds))
os.environ.pop("LISTEN_FDNAMES", None)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def listening_tcp(case: pyunit.TestCase) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    case.addCleanup(sock.close)
    sock.bind((HOST, 0))
    sock.listen(16)
    return sock


def bound_udp(case: pyunit.TestCase) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    case.addCleanup(sock.close)
    sock.bind((HOST, 0))
    return sock


def port_of(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


class ActivatedServer(RunningServer):
    """
    C{systemd-socket-activate [--fdname=NAMES] twistd -n sockecho ARGS}
    given C{sockets} as its inherited descriptors 3, 4, ...
    """

    def __init__(
        self,
        case: pyunit.TestCase,
        sockets: Sequence[socket.socket],
        args: Sequence[str],
        fdnames: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        activate = require_tool(case, "systemd-socket-activate")
        # Out of the way of 3, 4, ... so that dup2 overwrites none of them.
        high = [os.dup(s.fileno()) for s in sockets]
        while min(high) < 3 + len(sockets):
            low, high = high, [os.dup(fd) for fd in high]
            for fd in low:
                os.close(fd)
        command = [sys.executable, "-c", ACTIVATION_SHIM, ",".join(map(str, high))]
        command += [activate, *([f"--fdname={fdnames}"] if fdnames else [])]
        command += twistd_command(*args)
        environment = child_env()
        environment.update(env or {})
        self._spawn(case, command, environment, pass_fds=high)
        for fd in high:
            os.close(fd)

    def wait_exit(self, timeout: float = STARTUP_TIMEOUT) -> int:
        status = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return status


class NotifiedServer(ActivatedServer):
    """
    C{twistd -n sockecho ARGS} with extra environment variables.
    """

    def __init__(
        self, case: pyunit.TestCase, args: Sequence[str], env: Mapping[str, str]
    ) -> None:
        environment = child_env()
        environment.update(env)
        self._spawn(case, twistd_command(*args), environment)


def exchange_udp(case: pyunit.TestCase, port: int, data: bytes) -> bytes:
    client = udp_socket(case)
    client.sendto(data, (HOST, port))
    reply, source = client.recvfrom(65536)
    case.assertEqual(source, (HOST, port))
    return reply


def unit_sockecho_args(unit: Path) -> list[str]:
    """
    @return: the sockecho options of the unit's C{ExecStart=} (the words
        after C{sockecho}).
    """
    text = unit.read_text().replace("\\\n", " ")
    [line] = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    words = shlex.split(line.partition("=")[2])
    return words[words.index("sockecho") + 1 :]


class ActivationTests(unittest.TestCase):
    """
    The real C{systemd-socket-activate} starts the real server on sockets
    it passes: with and without C{--fdname}, TCP and UDP.
    """

    def test_index_without_fdnames(self) -> None:
        """
        The reproduction of issue 11: C{--echo systemd:domain=INET:index=0}
        under C{systemd-socket-activate} without C{--fdname} (no
        C{LISTEN_FDNAMES}, as before systemd 227). Twisted's own endpoint
        failed: C{twistd -n: bad address for --echo
        'systemd:domain=INET:index=0': list index out of range}, exit 1,
        the connection that activated it reset. Now it echoes, and the
        log names the inherited address.
        """
        listener = listening_tcp(self)
        port = port_of(listener)
        server = ActivatedServer(
            self,
            [listener],
            [
                "--echo",
                "systemd:domain=INET:index=0",
                "--no-upper",
                "--no-welcome",
                "--no-udp",
            ],
        )
        listener.close()
        self.assertEqual(tcp_exchange(port, b"Hello, world"), b"Hello, world")
        server.wait_for(rf"\] echo listening on tcp:127\.0\.0\.1:{port}$")
        server.wait_for(r"adopted systemd socket 0 \(fd 3, named 'unknown'\)")

    def test_names(self) -> None:
        """
        With C{--fdname} (C{LISTEN_FDNAMES}), listeners take their sockets
        by name, TCP and UDP, whatever their order.
        """
        echo, udp = listening_tcp(self), bound_udp(self)
        ports = port_of(echo), port_of(udp)
        server = ActivatedServer(
            self,
            [udp, echo],
            [
                "--echo",
                "systemd:name=echo",
                "--udp",
                "systemd:name=udp",
                "--no-upper",
                "--no-welcome",
            ],
            fdnames="udp:echo",
        )
        echo.close()
        udp.close()
        self.assertEqual(exchange_udp(self, ports[1], b"ping"), b"ping")
        self.assertEqual(tcp_exchange(ports[0], b"x" * 100000), b"x" * 100000)
        server.wait_for(rf"\] echo listening on tcp:127\.0\.0\.1:{ports[0]}$")
        server.wait_for(rf"\] udp listening on udp:127\.0\.0\.1:{ports[1]}$")
        server.wait_for(r"adopted systemd socket 1 \(fd 4, named 'echo'\)")

    def test_twisted_form_with_fdnames(self) -> None:
        """
        Twisted's form, C{systemd:domain=INET:index=0}, still works when
        C{LISTEN_FDNAMES} is set.
        """
        listener = listening_tcp(self)
        port = port_of(listener)
        ActivatedServer(
            self,
            [listener],
            [
                "--echo",
                "systemd:domain=INET:index=0",
                "--no-upper",
                "--no-welcome",
                "--no-udp",
            ],
            fdnames="echo",
        )
        listener.close()
        self.assertEqual(tcp_exchange(port, b"hello"), b"hello")

    def test_udp_without_fdnames(self) -> None:
        """
        C{--udp systemd:index=0} without names: the datagram that started
        the server is answered from the queue, then others.
        """
        udp = bound_udp(self)
        port = port_of(udp)
        server = ActivatedServer(
            self,
            [udp],
            ["--udp", "systemd:index=0", "--no-echo", "--no-upper", "--no-welcome"],
        )
        udp.close()
        self.assertEqual(exchange_udp(self, port, b"first"), b"first")
        self.assertEqual(exchange_udp(self, port, b"second"), b"second")
        server.wait_for(rf"\] udp listening on udp:127\.0\.0\.1:{port}$")

    def test_shipped_units(self) -> None:
        """
        The options of C{contrib/systemd/sockecho.service}'s C{ExecStart=}
        work on sockets of the kinds C{sockecho.socket} lists, in its order,
        unnamed: every service answers on the socket its index names, and
        the metrics one says ready. The drain timeout they give is shorter
        than the unit's C{TimeoutStopSec=}.
        """
        args = unit_sockecho_args(UNITS / "sockecho.service")
        kinds = re.findall(
            r"^Listen(Stream|Datagram)=", (UNITS / "sockecho.socket").read_text(), re.M
        )
        sockets = [
            listening_tcp(self) if kind == "Stream" else bound_udp(self)
            for kind in kinds
        ]
        server = ActivatedServer(self, sockets, args)
        ports = {}
        for option, description in zip(args, args[1:], strict=False):
            if description.startswith("systemd:index="):
                index = int(description.partition("=")[2])
                ports[option.lstrip("-")] = port_of(sockets[index])
        for sock in sockets:
            sock.close()
        self.assertEqual(
            set(ports), {"echo", "upper", "welcome", "udp", "metrics"}, args
        )
        self.assertEqual(tcp_exchange(ports["echo"], b"hi"), b"hi")
        self.assertEqual(tcp_exchange(ports["upper"], b"stra\xc3\x9fe"), b"STRASSE")
        self.assertIn(b"OK...hi\r\n", tcp_exchange(ports["welcome"], b"hi\n"))
        self.assertEqual(exchange_udp(self, ports["udp"], b"ping"), b"ping")
        for service in ("echo", "upper", "welcome", "metrics"):
            server.wait_for(
                rf"\] {service} listening on tcp:127\.0\.0\.1:{ports[service]}$"
            )
        server.wait_for(rf"\] udp listening on udp:127\.0\.0\.1:{ports['udp']}$")
        readyz = http.client.HTTPConnection(HOST, ports["metrics"], timeout=IO_TIMEOUT)
        self.addCleanup(readyz.close)
        readyz.request("GET", "/readyz")
        self.assertEqual(readyz.getresponse().status, 200)
        unit = (UNITS / "sockecho.service").read_text()
        stop = re.search(r"^TimeoutStopSec=(\d+)s?$", unit, re.M)
        assert stop is not None
        drain = float(args[args.index("--drain-timeout") + 1])
        self.assertLess(drain, int(stop.group(1)))

    def test_units_verify(self) -> None:
        """
        C{systemd-analyze verify} finds nothing to say about the unit pair
        (with C{ExecStart=} pointed at this checkout's twistd, which it
        checks is there).
        """
        analyze = require_tool(self, "systemd-analyze")
        directory = Path(temp_dir(self))
        for name in ("sockecho.socket", "sockecho.service"):
            text = (UNITS / name).read_text()
            text = text.replace("/opt/sockecho/bin/twistd", TWISTD)
            (directory / name).write_text(text)
        result = subprocess.run(
            [
                analyze,
                "verify",
                str(directory / "sockecho.socket"),
                str(directory / "sockecho.service"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=directory,
        )
        self.assertEqual(
            (result.returncode, result.stdout + result.stderr), (0, ""), result
        )

    def test_wrong_kind(self) -> None:
        """
        A stream socket given to C{--udp} ends start-up with one line
        naming it, and exit status 1.
        """
        listener = listening_tcp(self)
        port = port_of(listener)
        server = ActivatedServer(
            self,
            [listener],
            ["--udp", "systemd:index=0", "--no-echo", "--no-upper", "--no-welcome"],
        )
        listener.close()
        with socket.create_connection((HOST, port), timeout=IO_TIMEOUT):
            self.assertEqual(server.wait_exit(), 1)
        self.assertEqual(
            server.errors[-1],
            "sockecho: cannot listen on systemd:index=0: systemd socket 0 (fd 3, "
            "named 'unknown') is a stream socket, not a datagram one",
        )

    def test_not_activated(self) -> None:
        """
        A C{systemd:} listener in a process started without sockets gives
        one line saying so and exit status 1.
        """
        result = run_twistd(
            self,
            *any_port_args(echo="systemd:index=0"),
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        last = result.stderr.strip().splitlines()[-1]
        self.assertEqual(
            last,
            "sockecho: cannot listen on systemd:index=0: no socket inherited "
            "from systemd (LISTEN_FDS is not set: start sockecho from a "
            ".socket unit or systemd-socket-activate)",
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
            "from twisted_echo.operations.systemd import inherited_sockets\n"
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
        import twisted_echo.operations.systemd as systemd

        self.patch(systemd, "SD_LISTEN_FDS_START", fd)
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
        import twisted_echo.operations.systemd as systemd

        self.patch(systemd, "SD_LISTEN_FDS_START", pipe_r)
        with self.assertRaises(SystemdSocketError) as caught:
            adoptable_socket(SystemdAddress(0), socket.SOCK_STREAM, environment(1))
        self.assertIn("is not a socket", str(caught.exception))

    def test_endpoint(self) -> None:
        """
        The endpoint adopts the socket through C{adoptStreamPort} with its
        real family; a missing socket fails the L{Deferred}.
        """
        sock = listening_tcp(self)
        import twisted_echo.operations.systemd as systemd

        self.patch(systemd, "SD_LISTEN_FDS_START", sock.fileno())
        reactor = MemoryReactor()
        factory = Factory.forProtocol(Protocol)
        endpoint = SystemdStreamEndpoint(reactor, SystemdAddress(0), environment(1))
        self.successResultOf(endpoint.listen(factory))
        self.assertEqual(
            reactor.adoptedPorts, [(sock.fileno(), socket.AF_INET, factory)]
        )
        missing_one = SystemdStreamEndpoint(reactor, SystemdAddress(1), environment(1))
        self.failureResultOf(missing_one.listen(factory), SystemdSocketError)


class NotifySocket:
    """
    A real C{AF_UNIX} datagram socket standing in for systemd's notify
    socket, with the sender's credentials (C{SO_PASSCRED}).
    """

    def __init__(self, case: pyunit.TestCase, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        case.addCleanup(self.sock.close)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if abstract:
            name = f"sockecho-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.variable = "@" + name
        else:
            path = os.path.join(temp_dir(case), "notify")
            self.sock.bind(path)
            self.variable = path

    def receive(self, timeout: float = STARTUP_TIMEOUT) -> tuple[dict[str, str], int]:
        """
        @return: the next message's assignments and the sender's pid.
        """
        self.sock.settimeout(timeout)
        size = array.array("i").itemsize * 3
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(size))
        pid = -1
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = array.array("i", payload[:size])[0]
        fields = dict(
            line.split("=", 1) for line in data.decode("utf-8").splitlines() if line
        )
        return fields, pid

    def receive_until(
        self, key: str, timeout: float = STARTUP_TIMEOUT
    ) -> tuple[dict[str, str], int]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}= message within {timeout} s")
            fields, pid = self.receive(left)
            if key in fields:
                return fields, pid


class NotifyProcessTests(unittest.TestCase):
    """
    The real server tells a real notify socket C{READY=1}, C{STATUS=} and
    C{STOPPING=1}.
    """

    def test_ready_status_stopping(self) -> None:
        """
        C{READY=1} once every listener is up (all four accept at once),
        with a status; C{STOPPING=1} with the drain's status as soon as
        SIGTERM starts the drain, while a connection is still open.
        """
        notify = NotifySocket(self)
        server = NotifiedServer(
            self,
            [*any_port_args(), "--drain-timeout", "5"],
            {"NOTIFY_SOCKET": notify.variable},
        )
        fields, pid = notify.receive_until("READY")
        self.assertEqual(pid, server.pid)
        self.assertEqual(fields["READY"], "1")
        self.assertEqual(
            fields["STATUS"],
            "serving: 0 connection(s) open (echo 0, upper 0, welcome 0), 0 "
            "accepted; 0 datagram(s) answered",
        )
        ports = server.wait_listening()
        with socket.create_connection((HOST, ports["echo"]), timeout=IO_TIMEOUT) as c:
            c.sendall(b"x")
            self.assertEqual(c.recv(1), b"x")
            server.process.send_signal(signal.SIGTERM)
            fields, pid = notify.receive_until("STOPPING")
            self.assertEqual(pid, server.pid)
            self.assertEqual(
                fields,
                {
                    "STOPPING": "1",
                    "STATUS": "draining 1 open connection(s) for up to 5 s",
                },
            )
        self.assertIn(server.wait_exit(), CLEAN_SIGTERM_EXIT)

    def test_abstract_socket(self) -> None:
        """
        C{NOTIFY_SOCKET=@name} is a socket in the abstract namespace.
        """
        notify = NotifySocket(self, abstract=True)
        server = NotifiedServer(
            self, any_port_args(), {"NOTIFY_SOCKET": notify.variable}
        )
        fields, pid = notify.receive_until("READY")
        self.assertEqual((fields["READY"], pid), ("1", server.pid))


class NotifierTests(unittest.TestCase):
    """
    L{Notifier} and L{NotifyingService} in process.
    """

    def test_addresses(self) -> None:
        self.assertEqual(notify_address({"NOTIFY_SOCKET": "/run/n"}), "/run/n")
        self.assertEqual(notify_address({"NOTIFY_SOCKET": "@n"}), "\0n")
        self.assertIsNone(notify_address({}))
        self.assertIsNone(notify_address({"NOTIFY_SOCKET": ""}))
        self.assertIsNone(notify_address({"NOTIFY_SOCKET": "vsock:2:1"}))

    def test_unset_sends_nothing(self) -> None:
        notifier = Notifier.from_environment({})
        self.assertFalse(notifier.enabled)
        self.assertFalse(notifier.notify(READY=1))
        self.assertIsNone(notifier._socket)

    def test_sends(self) -> None:
        notify = NotifySocket(self)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": notify.variable})
        self.addCleanup(notifier.close)
        self.assertTrue(notifier.notify(READY=1, STATUS="two\nlines"))
        fields, pid = notify.receive(IO_TIMEOUT)
        self.assertEqual(fields, {"READY": "1", "STATUS": "two lines"})
        self.assertEqual(pid, os.getpid())

    def test_failure_logged_once(self) -> None:
        """
        A notify socket that is not there: nothing raised, one warning.
        """
        path = os.path.join(temp_dir(self), "absent")
        notifier = Notifier(path)
        self.addCleanup(notifier.close)
        from twisted.logger import globalLogPublisher

        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.assertFalse(notifier.notify(READY=1))
        self.assertFalse(notifier.notify(STATUS="x"))
        warnings = [
            e for e in events if "cannot notify systemd" in str(e.get("log_format"))
        ]
        self.assertEqual(len(warnings), 1)

    def test_service(self) -> None:
        """
        L{NotifyingService} says C{READY=1} when started after the server,
        updates C{STATUS=} only when it changed, and says C{STOPPING=1}
        when the drain starts.
        """
        sent: list[dict[str, str | int]] = []

        class Recorder(Notifier):
            def notify(self, **assignments: str | int) -> bool:
                sent.append(assignments)
                return True

        counters = {"echo": ServiceCounters(), "udp": ServiceCounters()}
        clock = Clock()
        service = NotifyingService(Recorder("/x"), lambda: counters, clock, 10.0)
        service.startService()
        clock.advance(0)  # READY=1 once the reactor runs
        self.assertEqual(
            sent,
            [
                {
                    "READY": 1,
                    "STATUS": "serving: 0 connection(s) open (echo 0), 0 accepted; "
                    "0 datagram(s) answered",
                }
            ],
        )
        clock.advance(5)
        self.assertEqual(len(sent), 1)
        counters["echo"].connections_open = counters["echo"].connections_total = 2
        clock.advance(5)
        self.assertEqual(
            sent[-1],
            {
                "STATUS": "serving: 2 connection(s) open (echo 2), 2 accepted; "
                "0 datagram(s) answered"
            },
        )
        clock.advance(10)
        self.assertEqual(len(sent), 2)
        service.drain_started()
        self.assertEqual(
            sent[-1],
            {"STOPPING": 1, "STATUS": "draining 2 open connection(s) for up to 10 s"},
        )
        clock.advance(10)
        self.assertEqual(len(sent), 3)
        service.stopService()

    def test_status_line(self) -> None:
        self.assertEqual(status_line({}), "serving")
        self.assertEqual(
            status_line({"udp": ServiceCounters(datagrams_out=3)}),
            "serving: 3 datagram(s) answered",
        )

    def test_ready_after_listeners(self) -> None:
        """
        Started as the server's sibling after it, the service says
        C{READY=1} only once the server's children have started.
        """
        order: list[str] = []

        class Listener(Service):
            def startService(self) -> None:
                Service.startService(self)
                order.append("listener")

        class Recorder(Notifier):
            def notify(self, **assignments: str | int) -> bool:
                order.append("notify")
                return True

        top, server = MultiService(), MultiService()
        Listener().setServiceParent(server)
        server.setServiceParent(top)
        clock = Clock()
        NotifyingService(Recorder("/x"), dict, clock, 0, 0).setServiceParent(top)
        top.startService()
        self.assertEqual(order, ["listener"])
        clock.advance(0)  # the reactor runs: twistd's signal handlers are set
        self.assertEqual(order, ["listener", "notify"])
