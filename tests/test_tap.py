"""
Tests for L{twisted_echo.tap}: the options and the service they build.
"""

from __future__ import annotations

import socket
import subprocess
import sys

from twisted.python import usage
from twisted.trial.unittest import TestCase

from twisted_echo.listen import (
    DatagramListenerService,
    ListenError,
    StreamListenerService,
)
from twisted_echo.tap import DEFAULTS, Options, makeService, with_backlog


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class OptionsTests(TestCase):
    """
    Option parsing and validation.
    """

    def test_defaults_are_on_loopback(self) -> None:
        """
        With no options every service listens on its default port on
        127.0.0.1 only; whoami, off by default, nowhere.
        """
        options = parse()
        self.assertEqual(
            options.listeners,
            {name: [description] for name, description in DEFAULTS.items()}
            | {"whoami": []},
        )
        for description in DEFAULTS.values():
            self.assertIn("interface=127.0.0.1", description)

    def test_listener_option_replaces_default_and_repeats(self) -> None:
        options = parse(
            "--echo", "tcp:0:interface=127.0.0.1", "--echo", "unix:/tmp/e.sock"
        )
        self.assertEqual(
            options.listeners["echo"], ["tcp:0:interface=127.0.0.1", "unix:/tmp/e.sock"]
        )
        self.assertEqual(options.listeners["upper"], [DEFAULTS["upper"]])

    def test_numbers_and_rates(self) -> None:
        options = parse(
            "--udp-rate", "50/10", "--udp-global-rate", "0",
            "--idle-timeout", "2.5", "--max-connections", "0",
        )  # fmt: skip
        self.assertEqual(options["udp-rate"], (50.0, 10))
        self.assertEqual(options["udp-global-rate"], (0.0, 1))
        self.assertEqual(options["idle-timeout"], 2.5)
        self.assertEqual(options["max-connections"], 0)

    def test_backlog_is_added_to_stream_endpoints(self) -> None:
        self.assertEqual(with_backlog("tcp:7007", 1024), "tcp:7007:backlog=1024")
        self.assertEqual(with_backlog("unix:/s:backlog=5", 1024), "unix:/s:backlog=5")
        self.assertEqual(
            with_backlog("systemd:domain=INET:index=0", 9),
            "systemd:domain=INET:index=0",
        )

    def test_sizes(self) -> None:
        """
        C{--max-buffer} takes bytes or K, M, G (binary) suffixes; 64 MiB by
        default.
        """
        self.assertEqual(parse()["max-buffer"], 64 << 20)
        for text, size in [
            ("0", 0),
            ("65536", 65536),
            ("64K", 65536),
            ("64M", 64 << 20),
            ("1g", 1 << 30),
            ("2MiB", 2 << 20),
        ]:
            self.assertEqual(parse("--max-buffer", text)["max-buffer"], size, text)

    def test_parsing_installs_no_reactor(self) -> None:
        """
        Parsing and validating every kind of option leaves the reactor
        unchosen (checked in a fresh interpreter), so C{twistd -r} and the
        runner can still choose it.
        """
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys\n"
                "from twisted_echo.tap import Options\n"
                "Options().parseOptions(['--echo', 'tcp:0:interface=127.0.0.1',"
                " '--log-format', 'json', '--udp', 'udp:0'])\n"
                "print('twisted.internet.reactor' in sys.modules)\n",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.stdout.strip(), "False", result.stderr)

    def test_switch_a_service_off(self) -> None:
        options = parse("--no-upper", "--no-udp")
        self.assertEqual(options.listeners["upper"], [])
        self.assertEqual(options.listeners["udp"], [])

    def test_errors_name_the_option_and_value(self) -> None:
        for args, words in [
            (["--echo", "bogus:1"], "bad address for --echo 'bogus:1'"),
            (["--welcome", "tcp:notaport"], "bad address for --welcome 'tcp:notaport'"),
            (["--udp", "udp:x"], "bad address for --udp 'udp:x'"),
            (["--echo", "tcp:7:interfase=a"], "unknown parameter 'interfase'"),
            (["--upper", "tcp:0", "--no-upper"], "--upper and --no-upper conflict"),
            (["--udp-rate", "fast"], "--udp-rate takes RATE[/BURST]"),
            (["--udp-global-rate", "10/0"], "--udp-global-rate takes RATE[/BURST]"),
            (["--idle-timeout", "-1"], "--idle-timeout takes a number of seconds"),
            (["--max-buffer", "lots"], "--max-buffer takes a size in bytes"),
            (
                ["--workers", "0"],
                "--workers takes a positive number of processes or auto",
            ),
            (["--workers", "many"], "--workers takes a positive number"),
            (["--max-buffer", "-1M"], "--max-buffer takes a size in bytes"),
            (["--idle-timeout", "nan"], "--idle-timeout takes a number of seconds"),
            (["--stall-timeout", "inf"], "--stall-timeout takes a number of seconds"),
            (["--line-timeout", "NaN"], "--line-timeout takes a number of seconds"),
            (["--drain-timeout", "-inf"], "--drain-timeout takes a number of seconds"),
            (["--max-per-peer", "x"], "--max-per-peer takes a number of connections"),
            (["--log-format", "xml"], "--log-format takes text or json"),
            (
                ["--log-level", "loud"],
                "--log-level takes debug, info, warn, error, critical, not 'loud'",
            ),
            (["--max-line", "0"], "--max-line takes a positive number of bytes"),
            (["--max-line", "many"], "--max-line takes a positive number of bytes"),
            (
                ["--no-echo", "--no-upper", "--no-welcome", "--no-udp"],
                "nothing to run",
            ),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                parse(*args)
            self.assertIn(words, str(caught.exception), args)


class MakeServiceTests(TestCase):
    """
    The service tree and its start-up failures.
    """

    def test_one_child_per_listener(self) -> None:
        service = makeService(
            parse(
                "--echo", "tcp:0:interface=127.0.0.1",
                "--echo", "tcp6:0:interface=\\:\\:1",
                "--upper", "tcp:0:interface=127.0.0.1",
                "--no-welcome",
                "--udp", "udp:0:interface=127.0.0.1",
            )
        )  # fmt: skip
        children = list(service)
        self.assertEqual(
            [(type(c), c.service_name) for c in children],  # type: ignore[attr-defined]
            [
                (StreamListenerService, "echo"),
                (StreamListenerService, "echo"),
                (StreamListenerService, "upper"),
                (DatagramListenerService, "udp"),
            ],
        )
        self.assertEqual(sorted(service.counters), ["echo", "udp", "upper"])

    def test_log_level_above_info_turns_connection_lines_off(self) -> None:
        """
        C{--log-level warn} (or above) makes no per-connection line at all;
        the default, info, makes them.
        """
        for args, expected in [((), True), (("--log-level", "warn"), False)]:
            service = makeService(parse("--echo", "tcp:0", "--welcome", "tcp:0", *args))
            self.assertEqual(
                {f.log_connections for f in service.factories}, {expected}, args
            )

    def test_starts_and_stops_listening(self) -> None:
        service = makeService(
            parse(
                "--echo", "tcp:0:interface=127.0.0.1",
                "--upper", "tcp:0:interface=127.0.0.1",
                "--welcome", "tcp:0:interface=127.0.0.1",
                "--udp", "udp:0:interface=127.0.0.1",
            )
        )  # fmt: skip
        service.privilegedStartService()
        service.startService()
        ports = [child.port for child in service]  # type: ignore[attr-defined]
        self.assertTrue(all(p is not None for p in ports))
        return service.stopService()

    def test_busy_port_raises_and_stops_the_started_listeners(self) -> None:
        """
        A port in use raises L{ListenError} naming the address, after the
        listeners that did start are stopped again.
        """
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        description = f"tcp:{busy.getsockname()[1]}:interface=127.0.0.1"
        top = makeService(
            parse("--echo", "tcp:0:interface=127.0.0.1", "--echo", description)
        )
        with self.assertRaises(ListenError) as caught:
            top.privilegedStartService()
        self.assertEqual(
            str(caught.exception),
            f"cannot listen on {description}: address already in use",
        )
        self.assertEqual({child.port for child in top}, {None})  # type: ignore[attr-defined]
