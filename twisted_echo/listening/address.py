# -*- test-case-name: tests.test_address -*-
"""
Addresses written the way users type them: as Twisted client endpoint strings.

A TLS connection's addresses are L{TLSIPv4Address} or L{TLSIPv6Address}
(see L{tls_address}), so that logs name them C{ssl:HOST:PORT}, the string
C{sockecho-client} connects to them with.
"""

from __future__ import annotations

import sys

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import quoteStringArgument


class TLSIPv4Address(IPv4Address):
    """
    An L{IPv4Address} reached over TLS (on either side of the connection).
    """


class TLSIPv6Address(IPv6Address):
    """
    An L{IPv6Address} reached over TLS (on either side of the connection).
    """


def tls_address(address: object) -> object:
    """
    Mark an IPv4 or IPv6 address as reached over TLS.

    @param address: a transport address.
    @return: a L{TLSIPv4Address} or L{TLSIPv6Address} with the same fields,
        or C{address} itself when it is neither IPv4 nor IPv6 (or is
        already marked).
    """
    if isinstance(address, TLSIPv4Address | TLSIPv6Address):
        return address
    if isinstance(address, IPv6Address):
        return TLSIPv6Address(
            address.type, address.host, address.port, address.flowInfo, address.scopeID
        )
    if isinstance(address, IPv4Address):
        return TLSIPv4Address(address.type, address.host, address.port)
    return address


def describe_address(address: object) -> str:
    """
    Render a transport address as a client endpoint description.

    @param address: an L{IPv4Address}, L{IPv6Address} or L{UNIXAddress}
        (TCP or UDP), or a TLS one (L{tls_address}); anything else is
        rendered with C{str}.
    @return: e.g. C{tcp:127.0.0.1:7007}, C{tcp6:\\:\\:1:7007},
        C{ssl:127.0.0.1:7207}, C{ssl:\\:\\:1:7207}, C{udp:127.0.0.1:7007},
        C{unix:/run/sockecho.sock}: strings that C{sockecho-client} and
        C{clientFromString} accept. An IPv6 address whose zone is a name
        in its C{scopeID} (a PROXY header's, see
        L{twisted_echo.listening.proxyheader.ZONE}) is written with it:
        C{tcp6:fe80\\:\\:1%eth0:7007}.
    """
    if isinstance(address, IPv4Address | IPv6Address):
        kind = address.type.lower()
        if isinstance(address, TLSIPv4Address | TLSIPv6Address):
            kind = "ssl"
        elif isinstance(address, IPv6Address) and kind == "tcp":
            kind = "tcp6"
        host = address.host
        if isinstance(address, IPv6Address):
            zone = address.scopeID
            if zone and isinstance(zone, str) and "%" not in host:
                host = f"{host}%{zone}"  # a PROXY header's (proxyheader.ZONE)
        if ":" in host or "\\" in host:  # IPv6; IPv4 needs no quoting
            host = quoteStringArgument(host)
        return f"{kind}:{host}:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        text = (
            name.decode("utf-8", "backslashreplace")
            if isinstance(name, bytes)
            else str(name)
        )
        return f"unix:{text}"
    return str(address)


def peer_host(address: object) -> str | None:
    """
    @return: the host of an IPv4 or IPv6 address, L{None} for others; one
        shared string per host (C{sys.intern}), however many connections
        come from it.
    """
    host = getattr(address, "host", None)
    return sys.intern(host) if isinstance(host, str) else None
