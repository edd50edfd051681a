# -*- test-case-name: tests.test_websocket -*-
"""
The WebSocket service's HTTP side: the paths it serves (C{--websocket-path}
and the flavours relative to it), the subprotocol choice (RFC 6455 section
4.2.2), its page, and its plain HTTP/1.1 responses (RFC 9112).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

#: The page's file, in this package.
PAGE_FILE = "websocket_page.html"
#: The page's Content-Security-Policy header: inline script and style, and
#: WebSocket connections; nothing else is fetched.
PAGE_POLICY = (
    b"Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "
    b"style-src 'unsafe-inline'; connect-src ws: wss:; img-src data:"
)
#: The default path of the echo (and the page); the flavours' paths are
#: relative to it (L{flavour_paths}).
DEFAULT_PATH = "/"
#: The flavours served besides the echo, each at C{PATH/NAME}.
FLAVOUR_NAMES = ("upper", "whoami")


def check_path(path: str) -> str:
    """
    @param path: a C{--websocket-path} value.
    @return: C{path}, if it is an absolute URL path (RFC 3986 section 3.3)
        with no query, fragment or white space.
    @raise ValueError: otherwise, naming the fault.
    """
    if not path.startswith("/") or any(c in path for c in "?# \t\r\n"):
        raise ValueError(
            f"--websocket-path takes an absolute path such as / or /ws "
            f"(no query, no spaces), not {path!r}"
        )
    try:
        path.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(
            f"--websocket-path takes ASCII (percent-encode the rest), not {path!r}"
        ) from None
    return path


def flavour_paths(path: str = DEFAULT_PATH) -> dict[bytes, str]:
    """
    @param path: the echo's path (L{check_path}).
    @return: each served path (bytes, as requests carry it) and its flavour:
        C{path} the echo, C{path/upper} and C{path/whoami} the others
        (C{/} gives C{/upper}; C{/ws} and C{/ws/} give C{/ws/upper}).
    """
    base = path.rstrip("/")
    paths = {path.encode("ascii"): "echo"}
    for name in FLAVOUR_NAMES:
        paths[f"{base}/{name}".encode("ascii")] = name
    return paths


def choose_subprotocol(
    offered: Sequence[str], allowed: Sequence[str] | None
) -> str | None:
    """
    Select the subprotocol of a handshake (RFC 6455 section 4.2.2, item
    5.4: the server selects one of the client's values, or none).

    @param offered: the client's C{Sec-WebSocket-Protocol} values, in order.
    @param allowed: the server's list (C{--websocket-subprotocols}), or
        L{None} to accept any.
    @return: the first offered that is allowed, or L{None}.
    """
    for subprotocol in offered:
        if allowed is None or subprotocol in allowed:
            return subprotocol
    return None


def load_page() -> bytes:
    """
    @return: the page's HTML (UTF-8 bytes), read from the package data.
    """
    return resources.files("twisted_echo.services").joinpath(PAGE_FILE).read_bytes()


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
}


def http_response(
    status: int, payload: bytes, content_type: str, head: bool = False
) -> bytes:
    """
    @param status: the status code (one of L{_REASONS}').
    @param payload: the body, bytes.
    @param content_type: its C{Content-Type}.
    @param head: whether the request was C{HEAD} (the body is left out, its
        C{Content-Length} kept).
    @return: one HTTP/1.1 response ending the connection (C{Connection:
        close}, C{Cache-Control: no-store}); a C{200} (the page) also
        carries L{PAGE_POLICY}.
    """
    head_lines = [
        b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"")),
        b"Content-Type: " + content_type.encode("ascii"),
        b"Content-Length: %d" % len(payload),
        b"Cache-Control: no-store",
        b"Connection: close",
    ]
    if status == 200:
        # The page is self-contained: the browser is told to fetch nothing.
        head_lines.append(PAGE_POLICY)
    return b"\r\n".join(head_lines) + b"\r\n\r\n" + (b"" if head else payload)


__all__ = [
    "DEFAULT_PATH",
    "FLAVOUR_NAMES",
    "PAGE_FILE",
    "PAGE_POLICY",
    "check_path",
    "choose_subprotocol",
    "flavour_paths",
    "http_response",
    "load_page",
]
