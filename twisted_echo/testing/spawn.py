# -*- test-case-name: tests.test_spawn -*-
"""
A real sockecho in a child process, for other projects' tests: started on
free ports of 127.0.0.1 (port 0 listeners, the ports learnt from
C{--ports-file}), its log kept in a file, stopped with the drain.

It runs as its own process, not in the caller's reactor, so blocking
sockets, asyncio and Twisted clients alike can use it. This module imports
nothing from Twisted (the pytest plugin, L{twisted_echo.testing.pytest_plugin},
builds on it); for a server inside the running reactor see
L{twisted_echo.testing}.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager as ContextManager
from typing import IO

from twisted_echo.app import registry
from twisted_echo.app.registry import entry
from twisted_echo.listening.certificate import self_signed_certificate, write_pem
from twisted_echo.operations.portsfile import read_ports_file
from twisted_echo.testing.addresses import Addresses
from twisted_echo.testing.faults import AdminClient
from twisted_echo.testing.health import HealthClient, requested
from twisted_echo.testing.records import DEFAULT_TIMEOUT, Record, RecordsView

#: The only address servers started here listen on.
HOST = "127.0.0.1"
#: Seconds given to a server to start listening, by default.
DEFAULT_STARTUP_TIMEOUT = 10.0
#: Seconds given to a server to drain and exit once told to stop, by default
#: (sockecho's own drain timeout is 10 s); then it is killed.
DEFAULT_STOP_TIMEOUT = 15.0
#: The services given a port-0 listener unless the options name them: those
#: listening by default (L{twisted_echo.app.registry}).
SERVICES = tuple(registry.defaults())
#: Log lines quoted in a start-up error.
LOG_LINES_QUOTED = 20
#: How often the ports file is looked for while starting, in seconds.
POLL_INTERVAL = 0.02

#: The program run: twistd, named so in its messages.
_TWISTD = "; ".join(
    [
        "import sys",
        "sys.argv[0] = 'twistd'",
        "from twisted.scripts.twistd import run",
        "run()",
    ]
)


class StartError(Exception):
    """
    A sockecho did not start: it exited, or did not listen in time. Its text
    is one line saying which, then the server's last log lines.
    """


def options_from_keywords(keywords: Mapping[str, object]) -> list[str]:
    """
    Turn keyword arguments into sockecho options: C{max_line=80} is
    C{--max-line 80}, C{no_udp=True} is C{--no-udp}, a list or tuple is the
    option repeated; L{None} and C{False} give nothing. C{whoami=True} is a
    whoami listener on a free TCP port (C{--whoami tcp:0:interface=127.0.0.1}).

    @return: the options, in order.
    """
    options: list[str] = []
    for name, value in keywords.items():
        option = "--" + name.replace("_", "-")
        if name == "whoami" and value is True:
            value = f"tcp:0:interface={HOST}"
        if value is None or value is False:
            continue
        if value is True:
            options.append(option)
            continue
        values = value if isinstance(value, list | tuple) else [value]
        for each in values:
            options += [option, str(each)]
    return options


def _names(options: Sequence[str], service: str) -> bool:
    """
    @return: whether C{options} give C{service} listeners or switch it off.
    """
    return any(
        option in (f"--{service}", f"--no-{service}")
        or option.startswith(f"--{service}=")
        for option in options
    )


def default_listeners(
    options: Sequence[str], certificate: tuple[str, str] | None = None
) -> list[str]:
    """
    @param options: sockecho options.
    @param certificate: the paths of a certificate and its key, to serve
        echo, upper and welcome over TLS; or L{None}.
    @return: options giving a free port of 127.0.0.1 to each of echo,
        upper, welcome and UDP echo that C{options} neither give a listener
        nor switch off (C{ssl:} ones for the first three with
        C{certificate}).
    """
    defaults: list[str] = []
    for service in registry.defaults():
        if _names(options, service):
            continue
        if entry(service).stream is None:
            defaults += [f"--{service}", f"udp:0:interface={HOST}"]
        elif certificate is not None:
            cert, key = certificate
            defaults += [
                f"--{service}",
                f"ssl:0:interface={HOST}:privateKey={key}:certKey={cert}",
            ]
        else:
            defaults += [f"--{service}", f"tcp:0:interface={HOST}"]
    return defaults


def make_certificate(directory: str) -> tuple[str, str]:
    """
    Write a self-signed certificate for C{localhost} and C{127.0.0.1}
    (P-256, valid for a day) and its key to C{directory}.

    @return: the paths of the certificate (also its own CA) and the key,
        both PEM.
    """
    key, certificate = self_signed_certificate("localhost", 1, HOST)
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    write_pem(key, certificate, cert_path, key_path)
    return cert_path, key_path


class SockechoProcess(Addresses):
    """
    A running C{twistd -n sockecho}: its addresses (L{Addresses}), its log,
    and L{stop}.

    @ivar process: the child process.
    @ivar directory: its working directory (its log, ports file and TLS
        certificate are there), removed by L{stop}.
    @ivar log_path: the file its standard output and error go to.
    @ivar ports_file: its C{--ports-file}.
    @ivar ca_file: with C{tls=True}, the certificate its TLS listeners
        serve, to trust as a CA; else L{None}.
    @ivar command: its command line.
    @ivar options: the sockecho options it was given (without the port-0
        listeners added for the services they do not name).
    """

    def __init__(
        self,
        options: Sequence[str] = (),
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        tls: bool = False,
        python: str | None = None,
    ) -> None:
        """
        Start the server and wait until every listener is up.

        @param options: sockecho options (C{"--banner", "hi"}). Each of
            echo, upper, welcome and UDP echo the options neither give a
            listener nor switch off gets one on a free port of 127.0.0.1.
        @param startup_timeout: seconds to wait for it to listen.
        @param tls: serve echo, upper and welcome over TLS (on free ports,
            unless the options give their listeners), with a new
            self-signed certificate for C{localhost} and C{127.0.0.1}
            (L{ca_file}).
        @param python: the Python to run it with (this one by default; it
            must have sockecho installed).
        @raise StartError: if it exits or does not listen within
            C{startup_timeout} seconds; it is killed then.
        """
        super().__init__({})
        self.directory = tempfile.mkdtemp(prefix="sockecho-")
        self.log_path = os.path.join(self.directory, "sockecho.log")
        self.ports_file = os.path.join(self.directory, "ports.json")
        self.ca_file: str | None = None
        options = list(options)
        self.options = options
        certificate = None
        if tls:
            certificate = make_certificate(self.directory)
            self.ca_file = certificate[0]
        defaults = default_listeners(options, certificate)
        if not any(o == "--metrics" or o.startswith("--metrics=") for o in options):
            # The connection records' /records (records(), wait_for()...)
            # and the admin API's /faults (faults()), on loopback.
            defaults += ["--metrics", f"tcp:0:interface={HOST}"]
            if "--admin" not in options:
                defaults.append("--admin")
        self._records: RecordsView | None = None
        self.command = [
            python or sys.executable,
            "-c",
            _TWISTD,
            "--nodaemon",
            "--pidfile=",
            "sockecho",
            *defaults,
            *options,
            "--ports-file",
            self.ports_file,
        ]
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        self._log: IO[bytes] = open(self.log_path, "wb")
        try:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            self._clean_up()
            raise
        try:
            self._wait_listening(startup_timeout)
        except BaseException:
            self.kill()
            raise

    @property
    def records_view(self) -> RecordsView:
        """
        The records of this server's connections that closed since the
        last L{reset_records} (or its start), read from its C{--metrics}
        listener's C{/records} (L{twisted_echo.testing.records}).

        @raise LookupError: if it has no C{--metrics} listener.
        """
        if self._records is None:
            host, port = self.address("metrics")
            self._records = RecordsView(f"http://{host}:{port}/records")
        return self._records

    def faults(self, listener: str, profile: str) -> ContextManager[None]:
        """
        C{with server.faults("echo", "reset-after=10"): ...}: C{profile}
        on C{listener} (C{echo}, C{udp}...: docs/faults.md) from the next
        connection or datagram until the block ends, then the profile
        before it again (same text and seed), even if the block raises.
        Through the admin API (C{--admin}, on by default here unless the
        options give their own C{--metrics}).

        @raise ValueError: the profile does not parse (the server's reason).
        @raise LookupError: no such listener, or no admin API.
        @raise RuntimeError: a change the server refuses at run time
            (409, 501).
        """
        host, port = self.address("metrics")
        admin = AdminClient(f"http://{host}:{port}/faults")
        block: ContextManager[None] = admin.faults(listener, profile)
        return block

    def health(
        self,
        readyz: str | None = None,
        healthz: str | None = None,
        listeners: str | None = None,
    ) -> ContextManager[None]:
        """
        C{with server.health(readyz="fail", listeners="pause"): ...}: the
        probes and listeners switched as given (the others as they are)
        for the block, then the state before it again, even if the block
        raises. C{readyz}/C{healthz}: C{"fail"} answers 503 C{failed by
        the admin API}, C{"pass"}; C{listeners}: C{"pause"} stops
        accepting (connects wait in the backlog, datagrams in the socket's
        buffer; open connections carry on), C{"serve"}
        (docs/faults.md). Through the admin API (C{--admin}, on by
        default here unless the options give their own C{--metrics}).

        @raise ValueError: a bad value (the server's reason), or none given.
        @raise LookupError: no admin API.
        @raise RuntimeError: a change the server cannot make (501), or
            one a worker of C{--workers} did not confirm (504).
        """
        changes = requested(readyz, healthz, listeners)
        host, port = self.address("metrics")
        block: ContextManager[None] = HealthClient(
            f"http://{host}:{port}/health"
        ).block(changes)
        return block

    def unready(self) -> ContextManager[None]:
        """
        C{with server.unready(): ...}: C{/readyz} answers 503 C{failed by
        the admin API} for the block, while the services serve on
        (L{health}C{(readyz="fail")}).
        """
        return self.health(readyz="fail")

    def records(self, service: str | None = None) -> list[Record]:
        """
        @return: the records (dicts, C{twisted_echo/records/schema.json}) of
            the connections (of C{service}) closed since the last
            L{reset_records}, oldest first.
        """
        return self.records_view.records(service)

    def wait_for(
        self, n: int, service: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> list[Record]:
        """
        Wait until C{n} connections (of C{service}) have closed; see
        L{RecordsView.wait_for}.

        @raise AssertionError: after C{timeout} seconds, listing what came.
        """
        return self.records_view.wait_for(n, service, timeout)

    def assert_no_connections(self, service: str | None = None) -> None:
        """
        @raise AssertionError: if a connection (of C{service}) closed since
            the last L{reset_records}, listing them.
        """
        self.records_view.assert_no_connections(service)

    def expect_close(
        self, cause: str, service: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> Record:
        """
        The next connection (of C{service}) to close ended with C{cause}
        (L{RecordsView.expect_close}).

        @return: its record.
        @raise AssertionError: if it ended otherwise, or none closed in time.
        """
        return self.records_view.expect_close(cause, service, timeout)

    def reset_records(self) -> None:
        """
        See only the connections that close from now on (a shared server
        between two tests).
        """
        self.records_view.reset()

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                document = read_ports_file(self.ports_file)
            except ValueError:
                document = None  # not possible with an atomic write; retry
            if document is not None:
                self.listeners = {
                    name: list(found) for name, found in document["listeners"].items()
                }
                return
            status = self.process.poll()
            if status is not None:
                raise self._start_error(
                    f"sockecho exited with status {status} before listening"
                )
            if time.monotonic() >= deadline:
                raise self._start_error(
                    f"sockecho did not start listening within {timeout:g} s"
                )
            time.sleep(POLL_INTERVAL)

    def _start_error(self, what: str) -> StartError:
        lines = self.log_lines()
        last = next((line.strip() for line in reversed(lines) if line.strip()), "")
        quoted = "\n".join(f"    {line}" for line in lines[-LOG_LINES_QUOTED:])
        command = " ".join(["twistd -n sockecho", *self.options])
        return StartError(
            f"{what}: {last or '(no log)'}\n  ({command}); its last log lines:\n"
            + (quoted or "    (none)")
        )

    def log_lines(self) -> list[str]:
        """
        @return: the server's log so far (standard output and error), as
            text lines without their ends.
        """
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        return text.splitlines()

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> int:
        """
        Stop the server as init systems do (SIGTERM): it stops accepting,
        lets open connections finish (its C{--drain-timeout}) and exits; it
        is killed if still running after C{timeout} seconds. Its directory
        is removed. Stopping twice is harmless.

        @return: its exit status (C{-15}, or 0: a clean stop; C{-9}: killed).
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._clean_up()
        return self.process.returncode

    def kill(self) -> None:
        """
        Kill the server at once (no drain) and remove its directory.
        """
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._clean_up()

    def _clean_up(self) -> None:
        self._log.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SockechoProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_sockecho(
    *options: str,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    tls: bool = False,
    **keywords: object,
) -> SockechoProcess:
    """
    Start a sockecho in a child process on free ports of 127.0.0.1 and wait
    until it listens; stop it with L{SockechoProcess.stop} (or use it as a
    context manager).

    @param options: sockecho options as on the command line
        (C{"--whoami", "udp:0:interface=127.0.0.1"}).
    @param startup_timeout: seconds to wait for it to listen.
    @param tls: echo, upper and welcome over TLS with a new self-signed
        certificate (see L{SockechoProcess.ca_file}).
    @param keywords: more options (L{options_from_keywords}):
        C{banner="hi"}, C{max_line=80}, C{idle_timeout=1}, C{whoami=True}.
    @return: the running server.
    @raise StartError: if it exits or does not listen within
        C{startup_timeout} seconds (its last log lines are in the message).
    """
    return SockechoProcess(
        [*options, *options_from_keywords(keywords)],
        startup_timeout=startup_timeout,
        tls=tls,
    )
