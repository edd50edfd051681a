"""
Tests for L{twisted_echo.app.registry}: every service declared once, and a
new service added by one registry line.
"""

from __future__ import annotations

import json

from twisted.python import usage
from twisted.trial.unittest import TestCase

from tests.loopback import exchange
from twisted_echo import Addresses
from twisted_echo.app import registry
from twisted_echo.app.options import (
    DEFAULTS,
    Options,
    add_service_options,
    listener_keys,
    makeService,
)
from twisted_echo.app.registry import SERVICES, ServiceEntry, factory_of
from twisted_echo.app.supervisor import is_datagram_service
from twisted_echo.listening.listen import StreamListenerService
from twisted_echo.operations.announce import bound_listeners
from twisted_echo.operations.metrics import SockechoCollector
from twisted_echo.operations.portsfile import ports_document
from twisted_echo.operations.systemd import status_line
from twisted_echo.policies.counters import ServiceCounters
from twisted_echo.services.echo import EchoFactory
from twisted_echo.testing.spawn import default_listeners


class ReverseFactory(EchoFactory):
    """
    A service for the tests: echo, under another name.
    """

    service_name = "reverse"


#: The one line a new service takes (here off by default).
REVERSE = ServiceEntry(
    "reverse",
    "Endpoint for the reverse service.",
    stream=factory_of("tests.test_registry", "ReverseFactory"),
)


class RegistryTests(TestCase):
    """
    What the registry declares is what the options, listeners and test
    servers do.
    """

    def test_services(self) -> None:
        self.assertEqual(
            [(s.name, s.kind, s.default) for s in SERVICES],
            [
                ("echo", "stream", "tcp:7007:interface=127.0.0.1"),
                ("upper", "stream", "tcp:7008:interface=127.0.0.1"),
                ("welcome", "stream", "tcp:7009:interface=127.0.0.1"),
                ("udp", "datagram", "udp:7007:interface=127.0.0.1"),
                ("whoami", "stream+datagram", None),
                ("websocket", "stream", None),
            ],
        )
        self.assertEqual(DEFAULTS, registry.defaults())
        self.assertEqual(registry.datagram_only(), {"udp"})

    def test_every_service_has_its_options(self) -> None:
        """
        C{--NAME} for every service, with its default (or off);
        C{--no-NAME} only for those on by default.
        """
        text = str(Options())
        for service in SERVICES:
            self.assertIn(f"--{service.name}=", text)
            self.assertEqual(
                f"--no-{service.name}" in text, service.default is not None
            )
        self.assertIn("[default: off] (repeatable)", text)
        self.assertIn("Do not run the UDP echo service.", text)

    def test_listener_keys_and_kinds(self) -> None:
        """
        A service taking both kinds names its datagram listeners
        C{NAME-udp}; the supervisor asks the registry which keys are
        datagram ones.
        """
        options = Options()
        options.parseOptions(
            ["--no-echo", "--no-upper", "--no-welcome", "--udp", "udp:0",
             "--whoami", "tcp:0", "--whoami", " udp:0", "--whoami", "tcp:1"]
        )  # fmt: skip
        self.assertEqual(
            listener_keys(options),
            [
                ("udp", 0, "udp:0"),
                ("whoami", 0, "tcp:0"),
                ("whoami", 1, "tcp:1"),
                ("whoami-udp", 0, " udp:0"),
            ],
        )
        self.assertEqual(
            [is_datagram_service(k) for k in ("echo", "udp", "whoami", "whoami-udp")],
            [False, True, False, True],
        )
        self.assertEqual(registry.service_name("whoami-udp"), "whoami")

    def test_datagram_only_services_have_no_connections(self) -> None:
        """
        systemd's status and the metrics treat the registry's datagram-only
        services as such, whatever their name.
        """
        counters = {
            "echo": ServiceCounters(connections_open=1, connections_total=2),
            "dns": ServiceCounters(datagrams_out=3),
        }
        self.assertEqual(
            status_line(counters, datagram_services={"dns"}),
            "serving: 1 connection(s) open (echo 1), 2 accepted; "
            "3 datagram(s) answered",
        )

        class Source:
            labels: tuple[tuple[str, str], ...] = ()

            def snapshot(self) -> dict[str, ServiceCounters]:
                return counters

        collector = SockechoCollector([Source()], datagram_services={"dns"})  # type: ignore[list-item]
        open_now = {
            m.name: [s.labels["service"] for s in m.samples]
            for m in collector.collect()
        }["sockecho_connections_open"]
        self.assertEqual(open_now, ["echo"])


class OneLineServiceTests(TestCase):
    """
    A service added by one registry entry gets its option, its listener
    (serving over a real socket), its counters and its test-server port.
    """

    def setUp(self) -> None:
        self.patch(registry, "SERVICES", (*SERVICES, REVERSE))

        class WithReverse(Options):
            pass

        add_service_options(WithReverse, [REVERSE])
        self.options_class = WithReverse

    async def test_option_listener_and_counters(self) -> None:
        options = self.options_class()
        options.parseOptions(
            ["--no-echo", "--no-upper", "--no-welcome", "--no-udp",
             "--reverse", "tcp:0:interface=127.0.0.1"]
        )  # fmt: skip
        self.assertEqual(
            listener_keys(options), [("reverse", 0, "tcp:0:interface=127.0.0.1")]
        )
        service = makeService(options)
        [child] = list(service)
        assert isinstance(child, StreamListenerService)
        self.assertEqual(child.service_name, "reverse")
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        assert child.port is not None
        client = await exchange(child.port.getHost().port, b"hello\n")
        self.assertEqual(b"".join(client.received), b"hello\n")
        self.assertEqual(list(service.counters), ["reverse"])
        self.assertEqual(service.counters["reverse"].connections_total, 1)

    async def test_ports_file_and_addresses(self) -> None:
        """
        The added service's listener is in the ports file under its name,
        and L{twisted_echo.Addresses} (and so the test servers) name it as
        C{.reverse} and C{.reverse_endpoint}, as they name echo's; and its
        client reaches it there.
        """
        options = self.options_class()
        options.parseOptions(
            ["--no-upper", "--no-welcome", "--no-udp",
             "--echo", "tcp:0:interface=127.0.0.1",
             "--reverse", "tcp:0:interface=127.0.0.1"]
        )  # fmt: skip
        service = makeService(options)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        document = json.loads(json.dumps(ports_document(1, bound_listeners(service))))
        self.assertEqual(sorted(document["listeners"]), ["echo", "reverse"])
        addresses = Addresses(document["listeners"])
        host, port = addresses.reverse
        self.assertEqual(host, "127.0.0.1")
        self.assertEqual(addresses.reverse_endpoint, f"tcp:127.0.0.1:{port}")
        self.assertNotEqual(addresses.reverse, addresses.echo)
        client = await exchange(port, b"hi\n")
        self.assertEqual(b"".join(client.received), b"hi\n")
        with self.assertRaises(AttributeError):
            addresses.nonesuch  # noqa: B018

    def test_default_gives_no_option_and_a_test_port(self) -> None:
        on = ServiceEntry(
            "reverse",
            "Endpoint for the reverse service.",
            stream=factory_of("tests.test_registry", "ReverseFactory"),
            default="tcp:7010:interface=127.0.0.1",
        )
        self.patch(registry, "SERVICES", (*SERVICES, on))

        class WithReverse(Options):
            pass

        add_service_options(WithReverse, [on])
        options = WithReverse()
        options.parseOptions(["--no-reverse"])
        self.assertEqual(options.listeners["reverse"], [])
        self.assertRaises(
            usage.UsageError,
            WithReverse().parseOptions,
            ["--no-reverse", "--reverse", "tcp:0"],
        )
        self.assertIn("--reverse", default_listeners(["--no-echo"]))
        self.assertNotIn("--echo", default_listeners(["--no-echo"]))
