# -*- test-case-name: tests.test_tls -*-
"""
The private methods and state of Twisted's L{TLSMemoryBIOProtocol} that
sockecho's TLS layer (L{twisted_echo.listening.tls.HalfCloseTLSProtocol},
a subclass) overrides, calls or reads: a peer's close_notify as an end of
input (TLS 1.3 half-close), closing after its own close_notify without
waiting, bytes written before the handshake not pausing the reader.

The stock implementations the subclass calls go through the functions
here. The behaviour check is C{tls_layer_misfit} in
L{twisted_echo.listening.tls}: it needs the layer itself, so it stays
there; it checks L{TWISTED_METHODS} and L{TWISTED_STATE} are present and
holds a TLS 1.3 conversation in memory to see the layer half-close. When
it does not fit, listeners and clients use Twisted's stock TLS.
"""

from __future__ import annotations

from typing import Any

from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure

__all__ = [
    "TWISTED_METHODS",
    "TWISTED_STATE",
    "check_handshake_status",
    "flush_send_bio",
    "tls_shutdown_finished",
    "twisted_tls_missing",
]

#: The methods of L{TLSMemoryBIOProtocol} that the layer overrides or calls.
TWISTED_METHODS = (
    "_flushReceiveBIO",
    "_flushSendBIO",
    "_shutdownTLS",
    "_tlsShutdownFinished",
    "_checkHandshakeStatus",
    "_unbufferPendingWrites",
    "_bufferedWrite",
    "failVerification",
)
#: The state of L{TLSMemoryBIOProtocol} that the layer reads or sets.
TWISTED_STATE = ("_lostTLSConnection", "_handshakeDone", "_aborted", "_producer")


def twisted_tls_missing() -> str | None:
    """
    @return: the first of L{TWISTED_METHODS} and L{TWISTED_STATE} that
        L{TLSMemoryBIOProtocol} lacks, as a reason, or L{None}.
    """
    for name in TWISTED_METHODS:
        if not callable(getattr(TLSMemoryBIOProtocol, name, None)):
            return f"TLSMemoryBIOProtocol.{name} is missing"
    for name in TWISTED_STATE:
        if not hasattr(TLSMemoryBIOProtocol, name):
            return f"TLSMemoryBIOProtocol.{name} is missing"
    return None


def check_handshake_status(protocol: Any) -> None:
    """
    Twisted's C{_checkHandshakeStatus} on C{protocol}: drive the handshake
    and, once it is done, flush what was written before it.
    """
    TLSMemoryBIOProtocol._checkHandshakeStatus(protocol)


def tls_shutdown_finished(protocol: Any, reason: Failure | None) -> None:
    """
    Twisted's C{_tlsShutdownFinished} on C{protocol}: the TLS session is
    over (C{reason}: why, or L{None} for a clean close); lose the TCP
    connection.
    """
    TLSMemoryBIOProtocol._tlsShutdownFinished(protocol, reason)


def flush_send_bio(protocol: Any) -> None:
    """
    Twisted's C{_flushSendBIO} on C{protocol}: write the bytes OpenSSL
    produced to the TCP transport.
    """
    TLSMemoryBIOProtocol._flushSendBIO(protocol)
