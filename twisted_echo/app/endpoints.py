# -*- test-case-name: tests.test_endpoints -*-
"""
Building the endpoints sockecho listens on from listening addresses
(L{twisted_echo.listening.endpoints.parse_description}): what
C{Options.stream_endpoint} did, outside the options.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint

from twisted_echo.listening.activation import (
    SystemdStreamEndpoint,
    parse_systemd_description,
)
from twisted_echo.listening.endpoints import BACKLOG_KINDS, parse_description
from twisted_echo.listening.proxyheader import ProxyHeaderEndpoint
from twisted_echo.listening.tls import TLSListeningReactor
from twisted_echo.listening.tlsextras import split_tls_extras


def with_backlog(description: str, backlog: int) -> str:
    """
    Add C{backlog=} to a stream endpoint description that has none.

    @param description: an endpoint string, e.g. C{tcp:7007}.
    @param backlog: the listen queue length.
    @return: e.g. C{tcp:7007:backlog=1024}, without surrounding whitespace
        (L{parse_description}); other endpoint types unchanged.
    """
    parsed = parse_description(description)
    if parsed.proxied or parsed.kind not in BACKLOG_KINDS:
        return description
    return parsed.with_default("backlog", str(backlog))


def stream_endpoint(
    description: str,
    reactor: Any,
    backlog: int,
    handshake_timeout: float | None = None,
    tls_layer: bool = True,
) -> IStreamServerEndpoint:
    """
    @param description: a stream listener's endpoint string, as given.
    @param reactor: the reactor the endpoint will listen with.
    @param backlog: C{--backlog}, added where the description sets none.
    @param handshake_timeout: C{--handshake-timeout}, seconds, for C{ssl:}.
    @param tls_layer: whether C{ssl:} listens with sockecho's TLS layer,
        which keeps half-close (L{twisted_echo.listening.tls}; checked
        against the installed Twisted when such a listener opens). L{False}
        where the endpoint only says where it would listen (the
        supervisor of C{--workers}): then no TLS layer is built.
    @return: its endpoint: C{systemd:} ones adopt a socket inherited from
        systemd, with or without C{LISTEN_FDNAMES}
        (L{twisted_echo.listening.activation}); C{haproxy:ENDPOINT} ones read
        a PROXY header on each connection before the service starts
        (L{twisted_echo.listening.proxyheader}); C{ssl:} ones take
        sockecho's C{clientCA=} and C{alpn=}
        (L{twisted_echo.listening.tlsextras}).
    @raise ValueError: for C{haproxy:} around a kind it does not take, or
        a bad C{clientCA=} or C{alpn=}.
    @raise Exception: whatever the endpoint parser raises for a bad one.
    """
    parsed = parse_description(description)
    if parsed.proxied:
        if parsed.kind in ("haproxy", "ssl", "udp"):
            raise ValueError(
                f"haproxy: does not take {parsed.kind}: listeners (TCP, UNIX "
                "and systemd: ones only)"
            )
        return ProxyHeaderEndpoint(
            stream_endpoint(
                parsed.inner, reactor, backlog, handshake_timeout, tls_layer
            )
        )
    if parsed.systemd:
        return SystemdStreamEndpoint(reactor, parse_systemd_description(parsed.inner))
    inner = parsed.inner
    if parsed.tls:
        inner, extras = split_tls_extras(parsed)
        if tls_layer:
            reactor = TLSListeningReactor(reactor, handshake_timeout, extras)
    endpoint: IStreamServerEndpoint = serverFromString(
        reactor, with_backlog(inner, backlog)
    )
    return endpoint


__all__ = ["stream_endpoint", "with_backlog"]
