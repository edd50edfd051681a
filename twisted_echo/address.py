# -*- test-case-name: tests.test_address -*-
"""
Addresses written the way users type them: as Twisted client endpoint strings.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import quoteStringArgument


def describe_address(address: object) -> str:
    """
    Render a transport address as a client endpoint description.

    @param address: an L{IPv4Address}, L{IPv6Address} or L{UNIXAddress}
        (TCP or UDP); anything else is rendered with C{str}.
    @return: e.g. C{tcp:127.0.0.1:7007}, C{tcp6:\\:\\:1:7007},
        C{udp:127.0.0.1:7007}, C{unix:/run/sockecho.sock}: strings that
        C{sockecho-client} and C{clientFromString} accept.
    """
    if isinstance(address, IPv4Address | IPv6Address):
        kind = address.type.lower()
        if isinstance(address, IPv6Address) and kind == "tcp":
            kind = "tcp6"
        return f"{kind}:{quoteStringArgument(address.host)}:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        text = (
            name.decode("utf-8", "backslashreplace")
            if isinstance(name, bytes)
            else str(name)
        )
        return f"unix:{text}"
    return str(address)
