# -*- test-case-name: tests.test_addresses -*-
"""
Tests for L{twisted_echo.testing.addresses}: a ports file's listeners by
service, every registered service an attribute. A service added to the
registry, end to end: L{tests.test_registry}.
"""

from __future__ import annotations

import unittest as pyunit

from twisted_echo.app import registry
from twisted_echo.app.registry import SERVICES, ServiceEntry
from twisted_echo.testing.addresses import Addresses


def entry(address: str, host: str | None, port: int | None) -> dict[str, object]:
    return {"address": address, "host": host, "port": port}


class AddressesTests(pyunit.TestCase):
    def test_missing_service(self) -> None:
        """
        A service that does not run is a L{LookupError} naming it and those
        that run.
        """
        addresses = Addresses({"echo": [entry("unix:/s", None, None)]})
        self.assertEqual(addresses.echo_endpoint, "unix:/s")
        with self.assertRaisesRegex(LookupError, "no udp listener .*runs: echo"):
            addresses.address("udp")
        with self.assertRaisesRegex(LookupError, "no udp listener .*runs: echo"):
            addresses.udp  # noqa: B018
        with self.assertRaisesRegex(LookupError, "unix:/s, which has no port"):
            addresses.address("echo")

    def test_every_registered_service(self) -> None:
        """
        Each service of the registry is C{.NAME} (its first listener's
        C{(host, port)}) and C{.NAME_endpoint}, those of 0.3 (echo, upper,
        welcome, udp, whoami) and websocket alike.
        """
        listeners = {
            s.name: [entry(f"tcp:127.0.0.1:{7000 + i}", "127.0.0.1", 7000 + i)]
            for i, s in enumerate(SERVICES)
        }
        addresses = Addresses(listeners)
        for i, service in enumerate(SERVICES):
            attribute = service.name.replace("-", "_")
            self.assertEqual(getattr(addresses, attribute), ("127.0.0.1", 7000 + i))
            self.assertEqual(
                getattr(addresses, f"{attribute}_endpoint"),
                f"tcp:127.0.0.1:{7000 + i}",
            )
            self.assertIn(attribute, dir(addresses))
        for name in ("echo", "upper", "welcome", "udp", "whoami", "websocket"):
            self.assertTrue(hasattr(addresses, name), name)

    def test_registry_read_when_asked(self) -> None:
        """
        A service added to the registry is an attribute at once; a name
        that is no service's is an L{AttributeError} (so C{hasattr} is
        false), whatever the file holds.
        """
        addresses = Addresses(
            {"reverse": [entry("tcp:127.0.0.1:7011", "127.0.0.1", 7011)]}
        )
        self.assertFalse(hasattr(addresses, "reverse"))
        reverse = ServiceEntry("reverse", "Endpoint for the reverse service.")
        original = registry.SERVICES
        registry.SERVICES = (*SERVICES, reverse)
        try:
            self.assertEqual(addresses.reverse, ("127.0.0.1", 7011))
            self.assertEqual(addresses.reverse_endpoint, "tcp:127.0.0.1:7011")
        finally:
            registry.SERVICES = original
        for name in ("nonesuch", "nonesuch_endpoint", "_endpoint", "__wrapped__"):
            self.assertFalse(hasattr(addresses, name), name)
