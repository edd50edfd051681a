"""
Tests for L{twisted_echo.app.options}: the options and the service they build.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys

from twisted.python import usage
from twisted.trial.unittest import TestCase

from twisted_echo.app.helpgroups import HELP_GROUPS
from twisted_echo.app.options import (
    DEFAULTS,
    Options,
    makeService,
    with_backlog,
)
from twisted_echo.listening.listen import (
    DatagramListenerService,
    ListenError,
    StreamListenerService,
)
from twisted_echo.policies.loopguard import DEFAULT_NEVER_ANSWER


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
        127.0.0.1 only; whoami and websocket, off by default, nowhere.
        """
        options = parse()
        self.assertEqual(
            options.listeners,
            {name: [description] for name, description in DEFAULTS.items()}
            | {"whoami": [], "websocket": []},
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
                "from twisted_echo.app.options import Options\n"
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


def help_entries(text: str) -> dict[str, str]:
    """
    @param text: C{--help}'s text.
    @return: each option's help, unwrapped to one line, by option name, in
        the order shown.
    """
    entries: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        entry = re.match(r"^(?:  -\w, |      )--([\w-]+)=?\s+(.*)", line)
        if entry is not None:
            name = entry.group(1)
            entries[name] = entry.group(2)
        elif line.startswith("      ") and name is not None:
            # A continuation; textwrap breaks after hyphens too (0-/1023).
            glue = "" if entries[name].endswith("-") else " "
            entries[name] += glue + line.strip()
        else:
            name = None
    return entries


#: Every listener option, as C{--help} must list them first.
LISTENER_OPTIONS = ("echo", "upper", "welcome", "udp", "whoami")


class HelpTests(TestCase):
    """
    C{twistd -n sockecho --help}: listeners first, defaults as users type
    them.
    """

    def setUp(self) -> None:
        # What str(Options()) (twistd's --help) shows after the synopsis,
        # at 80 columns whatever $COLUMNS says: narrower, textwrap breaks
        # long values such as endpoint strings anywhere.
        self.help = Options().getUsage(width=80)
        self.entries = help_entries(self.help)

    def test_str_is_synopsis_and_usage(self) -> None:
        """
        C{str(Options())}, what C{--help} prints, is the synopsis line, then
        the grouped help.
        """
        self.assertEqual(str(Options()), "[options]\n" + Options().getUsage())

    def test_every_option_listed_once(self) -> None:
        """
        Each option is listed, once, under a heading.
        """
        options = Options()
        expected = {opt.rstrip("=") for opt in options.longOpt}
        self.assertEqual(set(self.entries), expected)
        for name in expected:
            self.assertEqual(
                len(re.findall(rf"^(?:  -\w, |      )--{name}[=\s]", self.help, re.M)),
                1,
                name,
            )

    def test_stall_timeout_says_slow_readers_need_more(self) -> None:
        """
        C{--stall-timeout} says what counts as progress (acknowledged bytes)
        and that slower readers need a longer timeout.
        """
        text = self.entries["stall-timeout"]
        self.assertIn("acknowledges", text)
        self.assertIn("slower readers need a longer timeout", text)
        self.assertIn("[default: 60]", text)

    def test_drain_delay_says_what_it_keeps_and_how_to_cut_it(self) -> None:
        """
        C{--drain-delay} is listed with the timeouts, default 0, saying that
        listeners keep accepting with C{/readyz} at 503 and that a second
        signal drains at once.
        """
        text = " ".join(self.entries["drain-delay"].split())
        self.assertIn("keep accepting and serving", text)
        self.assertIn("/readyz at 503", text)
        self.assertIn("a second SIGTERM/SIGINT drains at once", text)
        self.assertIn("[default: 0]", text)
        timeouts = dict(HELP_GROUPS)["Timeouts, in seconds"]
        self.assertIn("drain-delay", timeouts)

    def test_listeners_come_first(self) -> None:
        """
        The listener options come first, under the first heading, in the
        services' order, before any other option.
        """
        shown = list(self.entries)
        self.assertEqual(tuple(shown[: len(LISTENER_OPTIONS)]), LISTENER_OPTIONS)
        lines = self.help.splitlines()
        self.assertTrue(lines[0].startswith("Listeners"), lines[0])
        self.assertEqual(HELP_GROUPS[0][1][: len(LISTENER_OPTIONS)], LISTENER_OPTIONS)

    def test_groups_in_order(self) -> None:
        """
        The headings are L{HELP_GROUPS}' (with "Other" last, for twistd's
        C{--help} and C{--version}), each followed by its options.
        """
        headings = [line for line in self.help.splitlines() if line[:1].isalpha()]
        headings = headings[: headings.index("Other:") + 1]
        self.assertEqual(
            headings, [f"{heading}:" for heading, _ in HELP_GROUPS] + ["Other:"]
        )
        order = [name for _, names in HELP_GROUPS for name in names]
        grouped = [name for name in self.entries if name in order]
        self.assertEqual(grouped, sorted(grouped, key=order.index))
        self.assertEqual(list(self.entries)[-2:], ["help", "version"])

    def test_defaults_shown_as_typed(self) -> None:
        """
        Each default shown is what a user would type (C{1000/2000}, C{64M},
        C{300}), and giving it to its option yields the default's value.
        """
        shown = {}
        for name, text in self.entries.items():
            default = re.search(r"\[default: (.*?)\]", text)
            if default is not None:
                shown[name] = default.group(1)
        self.assertEqual(shown["udp-rate"], "1000/2000")
        self.assertEqual(shown["udp-global-rate"], "20000/40000")
        self.assertEqual(shown["max-buffer"], "64M")
        self.assertEqual(shown["idle-timeout"], "300")
        self.assertEqual(shown["udp-never-answer"], "0-1023,7007,7010")
        self.assertEqual(shown["echo"], "tcp:7007:interface=127.0.0.1")
        defaults = parse()
        checked = set()
        for name, text in shown.items():
            if text == "off":
                continue
            given = parse(f"--{name}", text)
            checked.add(name)
            if name in DEFAULTS:
                self.assertEqual(given.listeners[name], defaults.listeners[name])
            elif name == "udp-never-answer":
                # Not given: None, which means the default set.
                self.assertIsNone(defaults[name])
                self.assertEqual(given[name], DEFAULT_NEVER_ANSWER)
            else:
                self.assertEqual(given[name], defaults[name], name)
                self.assertEqual(type(given[name]), type(defaults[name]), name)
        parameters = {p[0] for p in Options.optParameters} | set(DEFAULTS)
        # Only --metrics, --ports-file (and --whoami, a handler) are off by
        # default.
        self.assertEqual(parameters - checked, {"metrics", "ports-file"})
        self.assertEqual(shown["ports-file"], "off")
        self.assertEqual(shown["whoami"], "off")
        self.assertEqual(shown["metrics"], "off")
        self.assertIsNone(defaults["metrics"])
        self.assertEqual(defaults.listeners["whoami"], [])


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
