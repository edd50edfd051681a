"""
Tests for systemd integration: sd_notify (L{twisted_echo.operations.systemd}),
in process and with a real C{AF_UNIX} notify socket, and socket activation
(L{twisted_echo.listening.activation}) with the real
C{systemd-socket-activate} (its unit tests: L{tests.test_activation}).

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
from twisted.internet.task import Clock
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
from twisted_echo.operations.systemd import (
    Notifier,
    NotifyingService,
    notify_address,
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
