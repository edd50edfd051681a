# -*- test-case-name: tests.test_endpoints -*-
"""
The one reader of listening-address strings: every place that needs to know
what kind of listener a description names (stream or datagram, TLS, an
inherited systemd socket, a PROXY-header wrapper) asks L{parse_description}.

Descriptions are Twisted endpoint strings (C{twisted.internet.endpoints.
serverFromString}: fields split on unescaped colons, C{key=value} fields are
keyword arguments, a backslash escapes the next character), plus sockecho's
C{udp:PORT[:interface=ADDR]} and the C{haproxy:ENDPOINT} wrapper. Whitespace
around the whole description, and around the kind, is not part of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The prefix that wraps a stream listener in a PROXY-header reader
#: (L{twisted_echo.listening.proxyheader}).
PROXY_PREFIX = "haproxy:"
#: The kinds whose Twisted parser takes C{backlog=}.
BACKLOG_KINDS = frozenset({"tcp", "tcp6", "unix", "ssl"})

_UNESCAPED_COLON = re.compile(r"(?<!\\):")
_ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True)
class EndpointDescription:
    """
    A listening address as L{parse_description} read it.

    @ivar given: the text as the user gave it.
    @ivar proxied: whether it is wrapped in C{haproxy:} (a PROXY header is
        read on each connection before the service starts).
    @ivar inner: the description without C{haproxy:} and without surrounding
        whitespace: what the endpoint parser reads.
    @ivar kind: the endpoint type of C{inner}: C{tcp}, C{tcp6}, C{unix},
        C{ssl}, C{systemd}, C{udp}, or another endpoint plugin's prefix
        (C{haproxy} when C{haproxy:} was given twice). As given: endpoint
        types are case-sensitive, as in Twisted.
    @ivar args: C{inner}'s positional fields after the kind, unescaped.
    @ivar options: C{inner}'s C{key=value} fields, unescaped, in order.
    """

    given: str
    proxied: bool
    inner: str
    kind: str
    args: tuple[str, ...]
    options: tuple[tuple[str, str], ...]

    @property
    def datagram(self) -> bool:
        """
        Whether it is a UDP listener (C{udp:}); every other kind streams.
        """
        return self.kind == "udp"

    @property
    def tls(self) -> bool:
        """
        Whether it is a TLS listener (C{ssl:}).
        """
        return self.kind == "ssl"

    @property
    def systemd(self) -> bool:
        """
        Whether it names a socket inherited from systemd (C{systemd:}).
        """
        return self.kind == "systemd"

    def option(self, key: str) -> str | None:
        """
        @return: the value of C{key=} (the last one given), or L{None}.
        """
        found = None
        for name, value in self.options:
            if name == key:
                found = value
        return found

    def with_default(self, key: str, value: str) -> str:
        """
        @return: C{inner} with C{key=value} added when it has no C{key=}.
        """
        if self.option(key) is not None:
            return self.inner
        return f"{self.inner}:{key}={value}"

    def without(self, *keys: str) -> str:
        """
        @return: C{inner} without its C{key=} fields for each of C{keys}
            (the other fields as given, escapes kept).
        """
        fields = _UNESCAPED_COLON.split(self.inner)
        kept = [fields[0]]
        for field in fields[1:]:
            key, sep, _ = field.partition("=")
            if not (sep and not key.endswith("\\") and _unescape(key) in keys):
                kept.append(field)
        return ":".join(kept)


def parse_description(text: str) -> EndpointDescription:
    """
    Read a listening address: its kind, fields and wrapper. Checks nothing
    beyond that (the endpoint's own parser does, when it is built).

    @param text: an endpoint description as given (C{--echo}, C{--udp},
        C{--whoami}, C{--metrics}), e.g. C{tcp:7007:interface=127.0.0.1},
        C{haproxy:unix:/run/s.sock}, C{udp:7007}, C{ systemd:index=0 }.
    @return: the L{EndpointDescription}.
    """
    inner = text.strip()
    proxied = inner.startswith(PROXY_PREFIX)
    if proxied:
        inner = inner[len(PROXY_PREFIX) :].strip()
    fields = _UNESCAPED_COLON.split(inner)
    kind = fields[0].strip()
    args: list[str] = []
    options: list[tuple[str, str]] = []
    # "kind:" with nothing after it has no fields (not one empty one).
    for field in fields[1:] if fields[1:] != [""] else []:
        key, sep, value = field.partition("=")
        if sep and not key.endswith("\\"):
            options.append((_unescape(key), _unescape(value)))
        else:
            args.append(_unescape(field))
    return EndpointDescription(
        given=text,
        proxied=proxied,
        inner=inner,
        kind=kind,
        args=tuple(args),
        options=tuple(options),
    )


def _unescape(field: str) -> str:
    return _ESCAPE.sub(r"\1", field)


__all__ = [
    "BACKLOG_KINDS",
    "PROXY_PREFIX",
    "EndpointDescription",
    "parse_description",
]
