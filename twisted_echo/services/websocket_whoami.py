# -*- test-case-name: tests.test_websocket_whoami -*-
"""
The WebSocket service's C{/whoami} flavour: one JSON text message saying how
the server saw the client's upgrade request, then close 1000.

The object is the whoami service's (L{twisted_echo.services.whoami.WhoamiInfo.describe}:
C{client*} after a PROXY header, C{proxy*}, C{local*}, C{host}, C{pid},
C{worker}, C{version}, C{tls}), with C{service} C{"websocket"} and:
 - C{request}: the request line as the server read it
   (C{"GET /whoami HTTP/1.1"});
 - C{headers}: the request's headers in order, as C{[name, value]} pairs,
   names as the client wrote them (C{h11} keeps their case; values with
   surrounding white space removed, RFC 9110 section 5.5);
 - C{subprotocol}: the subprotocol accepted, or L{None};
 - C{extensions}: the extensions accepted (C{["permessage-deflate"]}) or
   C{[]};
 - C{tls}: over TLS (C{ssl:}) C{{"version", "cipher", "sni", "alpn"}}
   (C{alpn}: the protocol agreed by ALPN, RFC 7301, or L{None}); else
   L{None}.
Bytes that are not valid UTF-8 in the request line or headers are shown
with U+FFFD.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import h11
from OpenSSL import SSL

from twisted_echo.services.whoami import WhoamiInfo, tls_fields

#: The C{service} field of the answer.
SERVICE_NAME = "websocket"


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def tls_details(transport: object) -> dict[str, str | None] | None:
    """
    @param transport: a connection's transport.
    @return: the whoami service's TLS fields
        (L{twisted_echo.services.whoami.tls_fields}) plus C{alpn}, or
        L{None} when the connection is not TLS.
    """
    fields = tls_fields(transport)
    if fields is None:
        return None
    handle = transport.getHandle()  # type: ignore[attr-defined]
    alpn: bytes = b""
    if isinstance(handle, SSL.Connection):
        try:
            alpn = handle.get_alpn_proto_negotiated()
        except (NotImplementedError, SSL.Error):
            alpn = b""
    fields["alpn"] = _text(alpn) if alpn else None
    return fields


def whoami_report(
    info: WhoamiInfo,
    request: h11.Request,
    client: object,
    local: object,
    proxy: object,
    transport: object,
    subprotocol: str | None,
    extensions: Sequence[str],
) -> dict[str, Any]:
    """
    @param info: who the server is (worker, version).
    @param request: the upgrade request as C{h11} read it.
    @param client: the client's address (after a PROXY header).
    @param local: the address the client reached.
    @param proxy: the proxy's address, or L{None}.
    @param transport: the connection's transport (for its TLS details).
    @param subprotocol: the subprotocol accepted, or L{None}.
    @param extensions: the names of the extensions accepted.
    @return: the answer's fields (see the module docstring).
    """
    fields = info.describe(client, local, proxy, tls_details(transport))
    fields["service"] = SERVICE_NAME
    target = _text(request.target)
    version = _text(request.http_version)
    fields["request"] = f"{_text(request.method)} {target} HTTP/{version}"
    fields["headers"] = [
        [_text(raw), _text(value)] for raw, value in request.headers.raw_items()
    ]
    fields["subprotocol"] = subprotocol
    fields["extensions"] = list(extensions)
    return fields


def encode_report(fields: dict[str, Any]) -> str:
    """
    @return: C{fields} as one JSON text (no trailing newline).
    """
    return json.dumps(fields, ensure_ascii=False, separators=(", ", ": "))
