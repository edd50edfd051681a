"""
Tests for L{twisted_echo.app.runner}, the twistd-facing layer: start-up errors
as exit statuses (with C{-n} and as a daemon), the open files limit, and a
real C{twistd} daemon (no C{-n}) started, used and stopped.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import resource
import signal
import socket
import subprocess
import unittest as pyunit
from collections.abc import Callable, Sequence

from twisted.logger import LogLevel
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import TestCase

from tests.process import (
    HOST,
    IO_TIMEOUT,
    MB,
    TWISTD,
    EchoReader,
    any_port_args,
    child_env,
    tcp_exchange,
    temp_dir,
    wait_until,
)
from twisted_echo.app import options as tap
from twisted_echo.app.runner import (
    StartupError,
    TwistdService,
    open_files_wanted,
    raise_open_files_limit,
)
from twisted_echo.log import setup as logformat


def busy_tcp_port(case: pyunit.TestCase) -> str:
    """
    @return: the description of a TCP port of 127.0.0.1 that is in use.
    """
    busy = socket.socket()
    case.addCleanup(busy.close)
    busy.bind((HOST, 0))
    busy.listen()
    return f"tcp:{busy.getsockname()[1]}:interface={HOST}"


def server_on(*args: str) -> tap.SockechoService:
    options = tap.Options()
    options.parseOptions(["--no-upper", "--no-welcome", "--no-udp", *args])
    return tap.makeService(options)


class StartupErrorTests(TestCase):
    """
    A listener that cannot listen, in memory.
    """

    def test_foreground_one_line_and_exit_1(self) -> None:
        """
        With C{-n}: one line naming the address on standard error, the pid
        file twistd wrote removed, exit status 1.
        """
        busy = busy_tcp_port(self)
        pidfile = self.mktemp()
        with open(pidfile, "w") as f:
            f.write(str(os.getpid()))
        stderr = io.StringIO()
        top = TwistdService(
            server_on("--echo", f"tcp:0:interface={HOST}", "--echo", busy),
            pidfile=pidfile,
            stderr=stderr,
        )
        with self.assertRaises(SystemExit) as caught:
            top.privilegedStartService()
        self.assertEqual(caught.exception.code, 1)
        self.assertEqual(
            stderr.getvalue(),
            f"sockecho: cannot listen on {busy}: address already in use\n",
        )
        self.assertFalse(os.path.exists(pidfile))

    def test_daemon_raises_an_exception_twistd_reports(self) -> None:
        """
        As a daemon: an L{Exception} (which twistd writes to its status pipe
        and reports) with the same line; nothing printed.
        """
        busy = busy_tcp_port(self)
        stderr = io.StringIO()
        top = TwistdService(server_on("--echo", busy), daemon=True, stderr=stderr)
        with self.assertRaises(StartupError) as caught:
            top.privilegedStartService()
        self.assertEqual(
            str(caught.exception), f"cannot listen on {busy}: address already in use"
        )
        self.assertEqual(stderr.getvalue(), "")


class OpenFilesTests(TestCase):
    def test_never_lowered(self) -> None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.assertEqual(raise_open_files_limit(16), soft)

    def test_no_connection_limit_wants_the_hard_limit(self) -> None:
        """
        C{--max-connections 0} (no limit) asks for every descriptor the hard
        limit allows; a limit asks for itself plus spares.
        """
        self.assertIsNone(open_files_wanted(0))
        self.assertEqual(open_files_wanted(10_000), 10_256)

    def test_metrics_connections_counted(self) -> None:
        """
        The metrics listener's connections are counted on top of the
        services' (issue 19: 450 idle metrics connections took every
        descriptor); its "no limit" wants the hard limit.
        """
        self.assertEqual(open_files_wanted(200, 64), 520)
        self.assertEqual(open_files_wanted(200, None), 456)
        self.assertIsNone(open_files_wanted(200, 0))
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            self.skipTest("the hard limit here is unlimited")
        self.assertEqual(raise_open_files_limit(None), hard)


class LogOptionTests(TestCase):
    """
    C{--log-format} and C{--log-level} as twistd parses them.
    """

    def parse(self, *args: str) -> ServerOptions:
        config = ServerOptions()
        config.parseOptions(list(args))
        self.addCleanup(setattr, logformat, "_twistd_options", {})
        return config

    def test_json_sets_twistds_logger(self) -> None:
        config = self.parse("-n", "sockecho", "--log-format", "json")
        self.assertIs(config["logger"], logformat.json_observer)

    def test_text_is_sockechos_observer_too(self) -> None:
        config = self.parse("-n", "sockecho")
        self.assertIs(config["logger"], logformat.text_observer)

    def test_log_level_filters_sockechos_observer(self) -> None:
        self.addCleanup(setattr, logformat, "_levels", logformat._levels)
        self.parse("-n", "sockecho", "--log-level", "error")
        self.assertEqual(logformat._levels, {LogLevel.error, LogLevel.critical})

    def test_users_own_logger_or_syslog_is_kept(self) -> None:
        config = self.parse(
            "-n", "--logger", "twisted.logger.textFileLogObserver",
            "sockecho", "--log-format", "json",
        )  # fmt: skip
        self.assertIsNot(config["logger"], logformat.json_observer)
        self.assertIsNot(config["logger"], logformat.text_observer)
        config = self.parse("--syslog", "sockecho", "--log-format", "json")
        self.assertIsNone(config["logger"])


def poll(condition: Callable[[], object], timeout: float, what: str) -> None:
    """
    Wait until C{condition()} is true, checking every 20 ms.

    @raise AssertionError: naming C{what} after C{timeout} seconds.
    """
    if not wait_until(condition, timeout):
        raise AssertionError(f"{what} not seen within {timeout} s")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


class Daemon:
    """
    C{twistd sockecho} as a daemon (no C{-n}) in a temporary directory, with
    a pid file and a log file there; killed at clean-up if still running.
    """

    def __init__(
        self,
        case: pyunit.TestCase,
        args: Sequence[str],
        logfile: bool = True,
        timeout: float = 30,
    ) -> None:
        """
        @param logfile: whether to give C{--logfile}; without it twistd logs
            to C{twistd.log} in its directory.
        @param timeout: seconds twistd has to daemonize or fail (a deadline:
            past it, C{subprocess.TimeoutExpired} fails the test).
        """
        self.case = case
        self.dir = temp_dir(case)
        self.pidfile = os.path.join(self.dir, "sockecho.pid")
        self.logfile = os.path.join(
            self.dir, "sockecho.log" if logfile else "twistd.log"
        )
        self.result = subprocess.run(
            [
                TWISTD,
                f"--pidfile={self.pidfile}",
                *([f"--logfile={self.logfile}"] if logfile else []),
                "sockecho",
                *args,
            ],
            cwd=self.dir,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        case.addCleanup(self.kill)

    @property
    def pid(self) -> int:
        with open(self.pidfile) as f:
            return int(f.read())

    def log(self) -> str:
        try:
            with open(self.logfile, encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, timeout: float = IO_TIMEOUT) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def seen() -> bool:
            match = re.search(pattern, self.log(), re.MULTILINE)
            if match:
                found.append(match)
            return match is not None

        poll(seen, timeout, f"log line {pattern!r}")
        return found[0]

    def ports(self) -> dict[str, int]:
        ports = {}
        for service in ("echo", "upper", "welcome", "udp"):
            match = self.wait_log(rf"\] {service} listening on \w+:127\.0\.0\.1:(\d+)")
            ports[service] = int(match.group(1))
        return ports

    def kill(self) -> None:
        try:
            pid = self.pid
        except (OSError, ValueError):
            return
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)


class DaemonTests(pyunit.TestCase):
    """
    A real twistd daemon: twistd's default mode, and what init scripts use.
    """

    def test_busy_port_fails_fast_with_twistds_report(self) -> None:
        """
        A busy port ends twistd at once with its report naming the address
        (on today's main it hung for ever), exit status 1 and no pid file;
        the log says it too.
        """
        busy = busy_tcp_port(self)
        daemon = Daemon(
            self,
            ["--echo", busy, "--no-upper", "--no-welcome", "--no-udp"],
            timeout=5.0,  # fails fast: a deadline
        )
        self.assertEqual(daemon.result.returncode, 1, daemon.result)
        self.assertEqual(
            daemon.result.stderr,
            "An error has occurred: b'sockecho.StartupError: cannot listen on "
            f"{busy}: address already in use'\n"
            "Please look at log file for more information.\n",
        )
        # twistd's parent exits as soon as the daemon reported; the daemon
        # removes its pid file right after.
        poll(lambda: not os.path.exists(daemon.pidfile), IO_TIMEOUT, "pid file removal")
        # The log has the line too (then twistd's traceback of the exception,
        # as twistd logs every start-up exception of a daemon).
        self.assertRegex(
            daemon.log(),
            rf"#critical\] sockecho: cannot listen on {busy}: address already in use",
        )

    def test_start_serve_drain_stop(self) -> None:
        """
        twistd returns 0 once the daemon runs; the daemon writes its pid
        file and its log, serves, finishes a 10 MB half-close echo in flight
        through SIGTERM, logs its summary, removes its pid file and exits.
        """
        daemon = Daemon(self, any_port_args())
        self.assertEqual(daemon.result.returncode, 0, daemon.result)
        pid = daemon.pid
        self.assertTrue(process_alive(pid))
        ports = daemon.ports()
        self.assertEqual(tcp_exchange(ports["echo"], b"hello"), b"hello")

        payload = os.urandom(10 * MB)
        sock = socket.create_connection((HOST, ports["echo"]), timeout=30)
        self.addCleanup(sock.close)
        reader = EchoReader(sock)
        sock.sendall(payload[: 5 * MB])
        daemon.wait_log(r"\] echo connection from .*:\d+$")
        os.kill(pid, signal.SIGTERM)
        daemon.wait_log(r"shutting down: no new connections; draining \d+")
        sock.sendall(payload[5 * MB :])
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(reader.finish(30), hashlib.sha256(payload).digest())
        self.assertEqual(reader.count, len(payload))

        poll(lambda: not process_alive(pid), IO_TIMEOUT, "the daemon's exit")
        self.assertFalse(os.path.exists(daemon.pidfile))
        log = daemon.log()
        self.assertRegex(log, rf"\] echo: connections=2 bytes_in={len(payload) + 5} ")
        self.assertRegex(log, r"\] Server Shut Down\.\n$")
        self.assertNotIn("Traceback", log)

    def test_json_log_goes_to_the_log_file_and_rotates(self) -> None:
        """
        C{--log-format json} as a daemon writes JSON records to twistd's log
        file, C{twistd.log} by default (not to standard output, /dev/null
        for a daemon); SIGUSR1 rotates it as it does twistd's text log, then
        sockecho logs its status there.
        """
        daemon = Daemon(self, [*any_port_args(), "--log-format", "json"], logfile=False)
        self.assertEqual(daemon.result.returncode, 0, daemon.result)
        daemon.wait_log(r'"log_format": "\{service\} listening on \{address\}"')
        port = int(daemon.wait_log(r'"address": "tcp:127\.0\.0\.1:(\d+)"').group(1))
        os.kill(daemon.pid, signal.SIGUSR1)
        poll(lambda: os.path.exists(daemon.logfile + ".1"), IO_TIMEOUT, "rotation")
        # Then the status summary, into the new file.
        daemon.wait_log(r'"log_format": "status: \{service\}: \{summary\}"')
        self.assertEqual(tcp_exchange(port, b"after"), b"after")
        daemon.wait_log(r'"bytes_in": 5')
        records = daemon.log().split("\n")
        self.assertEqual(records[-1], "")
        for record in records[:-1]:
            self.assertTrue(record.startswith("\x1e{"), record)


class OpenFilesProcessTests(pyunit.TestCase):
    def test_no_connection_limit_raises_to_the_hard_limit(self) -> None:
        """
        Started with a soft limit of 256 open files, C{--max-connections 0}
        ("no limit") runs with the soft limit raised to the hard limit.
        """
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard <= 256:
            self.skipTest(f"the hard limit here is {hard}")

        def low_soft_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

        process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "sockecho", *any_port_args(),
             "--max-connections", "0"],
            cwd=temp_dir(self),
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=low_soft_limit,
        )  # fmt: skip
        self.addCleanup(process.wait, IO_TIMEOUT)
        self.addCleanup(process.kill)
        assert process.stdout is not None
        for raw in process.stdout:
            if b"udp listening on" in raw:
                break
        with open(f"/proc/{process.pid}/limits") as f:
            line = next(x for x in f if x.startswith("Max open files"))
        self.assertEqual(line.split()[3:5], [str(hard), str(hard)], line)
