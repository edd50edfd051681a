"""
A real C{twistd -n sockecho} process for tests: started on free ports of
127.0.0.1, its log read line by line, always killed at clean-up; or one
shared by the tests that only connect to a server of the same options
(L{shared_server}); plus the blocking socket helpers, deadline polls
(L{wait_until}, L{raised_within}: tests never sleep or assert elapsed time)
and the rule for tools CI installs (skip when missing outside CI, fail when
missing in CI).
"""

from __future__ import annotations

import atexit
import hashlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest as pyunit
from collections.abc import Callable, Sequence

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
HOST = "127.0.0.1"
SERVICES = ("echo", "upper", "welcome", "udp")
ANY_PORT = {
    "echo": f"tcp:0:interface={HOST}",
    "upper": f"tcp:0:interface={HOST}",
    "welcome": f"tcp:0:interface={HOST}",
    "udp": f"udp:0:interface={HOST}",
}
BANNER = b"Welcome to the server. Type something and hit enter"
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
IO_TIMEOUT = 10.0
MB = 1 << 20
#: How twistd ends after a clean shutdown on SIGTERM: twistd (twisted.scripts.
#: twistd.run, app._exitWithSignal) re-raises the signal it stopped on, so the
#: status is -SIGTERM (143 in a shell); 0 is accepted too.
CLEAN_SIGTERM_EXIT = (0, -signal.SIGTERM)

# Telnet (RFC 854) command bytes and option codes.
IAC, DONT, DO, WONT, WILL = 255, 254, 253, 252, 251
AYT, NOP = 246, 241
ECHO, SGA, TTYPE, NAWS = 1, 3, 24, 31


def twistd_command(*args: str, twistd_options: Sequence[str] = ()) -> list[str]:
    """
    @param twistd_options: twistd's own options (C{-r epoll}), put before
        C{sockecho}.
    @return: the command line of C{twistd -n sockecho ARGS} without a pid file.
    """
    return [TWISTD, "-n", "--pidfile=", *twistd_options, "sockecho", *args]


def any_port_args(**override: str) -> list[str]:
    """
    @return: options giving every service a port-0 address on 127.0.0.1,
        except the services named in C{override}.
    """
    args = []
    for service in SERVICES:
        args += [f"--{service}", override.get(service, ANY_PORT[service])]
    return args


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def temp_dir(case: pyunit.TestCase) -> str:
    """
    @return: a new empty directory, removed when C{case} ends.
    """
    path = tempfile.mkdtemp(prefix="sockecho-test-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


def require_tool(
    case: pyunit.TestCase, name: str, check: Callable[[str], bool] | None = None
) -> str:
    """
    Find the program C{name}: skip the test if it is missing, or fail it when
    the environment variable C{CI} is set (CI installs every tool).

    @param check: optional test of the found program's path (e.g. that it is
        the right variant); a program failing it counts as missing.
    @return: the program's path.
    """
    path = shutil.which(name)
    problem = None
    if path is None:
        problem = f"{name!r} is not installed"
    elif check is not None and not check(path):
        problem = f"{path} is not the {name} these tests need"
    if problem is not None:
        missing(case, problem, "apt-get install -y telnet netcat-openbsd")
    assert path is not None
    return path


def in_ci() -> bool:
    """
    @return: whether the environment variable C{CI} says this is CI.
    """
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(case: pyunit.TestCase, problem: str, hint: str) -> None:
    """
    Skip C{case} for want of something it needs, or fail it in CI.
    """
    if in_ci():
        case.fail(f"{problem} (CI is set, so this is an error; {hint})")
    case.skipTest(f"{problem} ({hint})")


def _is_openbsd_netcat(path: str) -> bool:
    """
    @return: whether C{path} is a netcat with C{-N} (shutdown after EOF).
    """
    try:
        result = subprocess.run(
            [path, "-h"], capture_output=True, text=True, timeout=IO_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "-N" in result.stdout + result.stderr


class RunningServer:
    """
    A C{twistd -n sockecho} process, its log read line by line by a thread.

    @ivar ports: the port each service listens on, by service name.
    @ivar output: standard output lines so far (text, no end of line).
    @ivar errors: standard error lines so far.
    """

    def __init__(
        self,
        case: pyunit.TestCase,
        args: Sequence[str],
        twistd_options: Sequence[str] = (),
    ) -> None:
        self._spawn(
            case, twistd_command(*args, twistd_options=twistd_options), child_env()
        )

    def _spawn(
        self,
        case: pyunit.TestCase,
        command: list[str],
        env: dict[str, str],
        pass_fds: Sequence[int] = (),
    ) -> None:
        """
        Start C{command} and read its standard output and error lines.
        """
        self.ports: dict[str, int] = {}
        self.output: list[str] = []
        self.errors: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            command,
            cwd=temp_dir(case),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=tuple(pass_fds),
        )
        case.addCleanup(self.kill)
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.process.stdout, self.output),
                (self.process.stderr, self.errors),
            )
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self, stream: io.BufferedReader, lines: list[str]) -> None:
        for raw in stream:
            with self._changed:
                lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(
        self, pattern: str, timeout: float = IO_TIMEOUT, start: int = 0
    ) -> re.Match[str]:
        """
        Wait until a line of standard output from index C{start} on matches
        the regular expression C{pattern}.

        @return: the match.
        @raise AssertionError: when no line matched in C{timeout} seconds or
            the process ended first.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = start
        with self._changed:
            while True:
                for line in self.output[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = max(seen, len(self.output))
                left = deadline - time.monotonic()
                ended = self.process.poll() is not None and not any(
                    r.is_alive() for r in self._readers
                )
                if left <= 0 or ended:
                    raise AssertionError(
                        f"no log line matching {pattern!r} within {timeout} s"
                        f" (exit status {self.process.poll()});\nstdout:\n"
                        + "\n".join(self.output[-30:])
                        + "\nstderr:\n"
                        + "\n".join(self.errors[-30:])
                    )
                self._changed.wait(min(left, 0.2))

    def wait_listening(self, services: Sequence[str] = SERVICES) -> dict[str, int]:
        """
        Wait for the C{listening on} line of each of C{services}.

        @return: L{ports}.
        """
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for service in services:
            match = self.wait_for(
                rf"\] {service} listening on (tcp|udp):127\.0\.0\.1:(\d+)$",
                max(0.0, deadline - time.monotonic()),
            )
            self.ports[service] = int(match.group(2))
        return self.ports

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """
        Send C{signum} and wait for the process to end and its output to be
        read.

        @return: the exit status.
        """
        self.process.send_signal(signum)
        status = self.process.wait(STOP_TIMEOUT)
        for reader in self._readers:
            reader.join(STOP_TIMEOUT)
        return status

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(STOP_TIMEOUT)
        finally:
            for reader in self._readers:
                reader.join(STOP_TIMEOUT)
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()


def start_server(
    case: pyunit.TestCase,
    args: Sequence[str] = (),
    twistd_options: Sequence[str] = (),
) -> RunningServer:
    """
    Start C{twistd -n --pidfile= [twistd_options] sockecho} with every
    service on a free port of 127.0.0.1 (plus C{args}), and wait until all
    four listen. The process is killed when C{case} ends.
    """
    server = RunningServer(case, [*any_port_args(), *args], twistd_options)
    server.wait_listening()
    return server


class _ProcessLifetime:
    """
    Stands in for a test case as the owner of a process shared by several
    tests: its clean-ups (kill the process, remove its directory) run when
    the test run's Python exits.
    """

    def addCleanup(self, function: Callable[..., object], *args: object) -> None:
        atexit.register(function, *args)


class SharedServer:
    """
    One test's view of a server it shares (L{shared_server}): what the
    server logs is read from where this test started (L{wait_for}'s
    default C{start}); everything else is the L{RunningServer}'s.

    @ivar mark: the index in C{output} of the first line logged after this
        test took the server.
    """

    def __init__(self, server: RunningServer) -> None:
        self._server = server
        self.mark = len(server.output)

    def __getattr__(self, name: str) -> object:
        return getattr(self._server, name)

    @property
    def ports(self) -> dict[str, int]:
        return self._server.ports

    @property
    def output(self) -> list[str]:
        return self._server.output

    @property
    def pid(self) -> int:
        return self._server.pid

    def wait_for(
        self, pattern: str, timeout: float = IO_TIMEOUT, start: int | None = None
    ) -> re.Match[str]:
        """
        L{RunningServer.wait_for}, from this test's first line by default.
        """
        return self._server.wait_for(
            pattern, timeout, self.mark if start is None else start
        )


_SHARED: dict[tuple[tuple[str, ...], tuple[str, ...]], RunningServer] = {}


def shared_server(
    args: Sequence[str] = (), twistd_options: Sequence[str] = ()
) -> SharedServer:
    """
    A server as L{start_server} starts it, shared by every test that asks
    for the same options in this test run (started by the first, killed
    when the run's Python exits, started again if it died). For tests that
    only connect to it: a test that stops, signals or reconfigures the
    server, or counts its descriptors or log lines from its start, starts
    its own. Works under pytest and trial alike (no class or module
    fixtures, which trial does not run for standard library test cases).
    """
    key = (tuple(args), tuple(twistd_options))
    server = _SHARED.get(key)
    if server is None or server.process.poll() is not None:
        command = twistd_command(
            *any_port_args(), *args, twistd_options=twistd_options
        )
        setpriv = shutil.which("setpriv")  # util-linux, in every Debian
        if setpriv is not None:
            # Killed by the kernel should this Python end without its exit
            # hooks (os._exit, a crash): no server outlives the test run.
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
        server = RunningServer.__new__(RunningServer)
        server._spawn(
            _ProcessLifetime(),  # type: ignore[arg-type]
            command,
            child_env(),
        )
        _SHARED[key] = server
        server.wait_listening()
    return SharedServer(server)


def run_twistd(case: pyunit.TestCase, *args: str) -> subprocess.CompletedProcess[str]:
    """
    Run C{twistd -n sockecho ARGS} to its end (it is expected to fail fast).
    """
    return subprocess.run(
        twistd_command(*args),
        cwd=temp_dir(case),
        env=child_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )


def wait_until(
    condition: Callable[[], object], timeout: float = IO_TIMEOUT, interval: float = 0.02
) -> bool:
    """
    Check C{condition} every C{interval} seconds until it is true or
    C{timeout} seconds have passed (polling with a deadline, for blocking
    tests; L{tests.loopback.wait_until} is the reactor's).

    @return: whether it became true; the caller asserts what it needs.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        left = deadline - time.monotonic()
        if left <= 0:
            return bool(condition())
        time.sleep(min(interval, left))
    return True


def raised_within(seconds: float, call: Callable[[], object]) -> BaseException:
    """
    Run C{call} in a thread, expecting it to raise, with a deadline.

    @return: what it raised.
    @raise AssertionError: when it had not ended within C{seconds}, or
        returned.
    """
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as e:
            raised.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AssertionError(f"{call} had not ended within {seconds} s")
    if not raised:
        raise AssertionError(f"{call} raised nothing")
    return raised[0]


def tcp_exchange(port: int, data: bytes, timeout: float = IO_TIMEOUT) -> bytes:
    """
    Connect to C{port}, send C{data}, shut down the sending side, and read
    until the server closes.

    @return: every byte received.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return bytes(received)
            received += chunk
        raise AssertionError(f"server did not close within {timeout} s")


def udp_socket(case: pyunit.TestCase, timeout: float = IO_TIMEOUT) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    case.addCleanup(sock.close)
    sock.settimeout(timeout)
    return sock


class EchoReader:
    """
    Reads everything a connected socket receives, in a thread, until the
    server closes: the count and SHA-256 of the bytes (for transfers too
    large to keep).

    @ivar count: bytes received so far.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.count = 0
        self._digest = hashlib.sha256()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while chunk := self.sock.recv(1 << 16):
                self._digest.update(chunk)
                self.count += len(chunk)
        except OSError:
            return

    def finish(self, timeout: float = 60.0) -> bytes:
        """
        Wait (at most C{timeout} seconds) for the server to close.

        @return: the SHA-256 digest of everything received.
        """
        self._thread.join(timeout)
        return self._digest.digest()


def http_call(
    url: str, method: str = "GET", body: bytes | None = None
) -> tuple[int, str]:
    """
    One HTTP request (at most C{IO_TIMEOUT} seconds).

    @return: the status and body text, error statuses included.
    """
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=IO_TIMEOUT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
