# -*- test-case-name: tests.test_twisted_tlsmemorybio,tests.test_tls -*-
"""
The private methods and state of Twisted's L{TLSMemoryBIOProtocol} that
sockecho's TLS layer needs: a peer's close_notify as an end of input (TLS
1.3 half-close), closing after its own close_notify without waiting, bytes
written before the handshake not pausing the reader.

L{HookedTLSMemoryBIOProtocol} overrides the private methods
(L{TWISTED_METHODS}) and calls public hooks instead
(C{handshake_status_checked}, C{close_notify_received},
C{tls_shutdown_finished}, C{buffered_write}, C{shutdown_tls}), and reads
the private state (L{TWISTED_STATE}) for public properties; sockecho's
layer (L{twisted_echo.listening.tls.HalfCloseTLSProtocol}) subclasses it
and implements the hooks.

The behaviour check is C{tls_layer_misfit} in
L{twisted_echo.listening.tls}: it needs the layer itself, so it stays
there; it checks L{TWISTED_METHODS} and L{TWISTED_STATE} are present
(L{twisted_tls_missing}) and holds a TLS 1.3 conversation in memory
between two sides of the layer (this base class included) to see it
half-close. When it does not fit, listeners and clients use Twisted's
stock TLS.
"""

from __future__ import annotations

from typing import Any

from OpenSSL.SSL import Error, WantReadError, ZeroReturnError
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure

__all__ = [
    "TWISTED_METHODS",
    "TWISTED_STATE",
    "HookedTLSMemoryBIOProtocol",
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
TWISTED_STATE = (
    "_lostTLSConnection",
    "_handshakeDone",
    "_aborted",
    "_producer",
    "_reason",
)


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


class HookedTLSMemoryBIOProtocol(TLSMemoryBIOProtocol):
    """
    Twisted's L{TLSMemoryBIOProtocol} with its private methods overridden to
    call public, documented hooks, and its private state read through public
    names: the base of sockecho's TLS layer
    (L{twisted_echo.listening.tls.HalfCloseTLSProtocol}), which implements
    the hooks and reaches no private name itself.

    Each hook's default is Twisted's own behaviour, so this class alone
    behaves as L{TLSMemoryBIOProtocol}. The data path is unchanged: writes
    go through Twisted's C{write} untouched (a hook is called only when
    bytes wait for the handshake), reads through one override of
    C{_flushReceiveBIO} holding Twisted's loop.
    """

    # Public views of Twisted's private state.

    @property
    def handshake_done(self) -> bool:
        """
        Whether the TLS handshake finished (Twisted's C{_handshakeDone}).
        """
        done: bool = self._handshakeDone
        return done

    @property
    def aborted(self) -> bool:
        """
        Whether C{abortConnection} was called (Twisted's C{_aborted}).
        """
        aborted: bool = self._aborted
        return aborted

    @property
    def tls_lost(self) -> bool:
        """
        Whether the TLS session is over (Twisted's C{_lostTLSConnection}).
        """
        lost: bool = self._lostTLSConnection
        return lost

    @property
    def tls_open(self) -> bool:
        """
        Whether the C{SSL.Connection} is still held (Twisted lets go of it
        in C{connectionLost}).
        """
        return self._tlsConnection is not None

    @property
    def writes_pending(self) -> bool:
        """
        Whether bytes written wait for the handshake (Twisted's
        C{_appSendBuffer}).
        """
        return bool(self._appSendBuffer)

    @property
    def registered_producer(self) -> Any:
        """
        The producer registered through this transport, as Twisted wraps it
        (C{_ProducerMembrane}), or L{None} (Twisted's C{_producer}).
        """
        return self._producer

    @property
    def passed_on_reason(self) -> Failure | None:
        """
        The failure Twisted will pass on to the wrapped protocol's
        C{connectionLost} (its C{_reason}), or L{None}.
        """
        reason = getattr(self, "_reason", None)
        return reason if isinstance(reason, Failure) else None

    # Public actions on Twisted's private machinery.

    def flush_send_bio(self) -> None:
        """
        Write the bytes OpenSSL produced to the TCP transport (Twisted's
        C{_flushSendBIO}).
        """
        TLSMemoryBIOProtocol._flushSendBIO(self)

    def send_close_notify(self) -> bool:
        """
        Ask OpenSSL for our close_notify and write it to the TCP transport
        (mid-handshake OpenSSL cannot: nothing is sent).

        @return: L{False} when the C{SSL.Connection} is already let go of
            (nothing done), else L{True}.
        """
        connection = self._tlsConnection
        if connection is None:
            return False
        try:
            connection.shutdown()
        except Error:
            pass
        TLSMemoryBIOProtocol._flushSendBIO(self)
        return True

    def release_buffers(self) -> None:
        """
        Let go of the producer registered and of the bytes waiting for the
        handshake (at close: they would hold this connection in a reference
        cycle).
        """
        self._producer = None
        self._appSendBuffer = []

    # The hooks; each default is Twisted's behaviour.

    def handshake_status_checked(self) -> None:
        """
        Called after each step of the handshake (Twisted's
        C{_checkHandshakeStatus}); L{handshake_done} says whether it
        finished. By default nothing.
        """

    def close_notify_received(self) -> bool:
        """
        The peer's close_notify came while reading.

        @return: L{True} when handled (reading stops, the connection stays
            open), L{False} for Twisted's way: answer with our close_notify
            and close. By default L{False}.
        """
        return False

    def tls_shutdown_finished(self, reason: Failure | None) -> None:
        """
        The TLS session is over: lose the TCP connection (Twisted's
        C{_tlsShutdownFinished}, which overriders call through C{super()}).

        @param reason: why, or L{None} for a clean close.
        """
        TLSMemoryBIOProtocol._tlsShutdownFinished(self, reason)

    def buffered_write(self, octets: bytes) -> None:
        """
        C{octets} were added to the bytes waiting for the handshake (or for
        OpenSSL to take them). By default (Twisted's) pause the producer
        registered.

        @param octets: the bytes, already kept.
        """
        producer = self._producer
        if producer is not None:
            producer.pauseProducing()

    def shutdown_tls(self) -> None:
        """
        Start or answer the TLS shutdown (Twisted's C{_shutdownTLS}: send
        our close_notify, and close the TCP connection once the peer's came).
        """
        TLSMemoryBIOProtocol._shutdownTLS(self)

    # Twisted's private methods, overridden to call the hooks.

    def _checkHandshakeStatus(self) -> None:  # noqa: N802 (Twisted's name)
        TLSMemoryBIOProtocol._checkHandshakeStatus(self)
        self.handshake_status_checked()

    def _tlsShutdownFinished(self, reason: Failure | None) -> None:  # noqa: N802
        self.tls_shutdown_finished(reason)

    def _bufferedWrite(self, octets: bytes) -> None:  # noqa: N802
        self._appSendBuffer.append(octets)
        self.buffered_write(octets)

    def _shutdownTLS(self) -> None:  # noqa: N802
        self.shutdown_tls()

    def _flushReceiveBIO(self) -> None:  # noqa: N802
        # Twisted's loop, but a close_notify goes to close_notify_received
        # first.
        while not self._lostTLSConnection:
            try:
                data = self._tlsConnection.recv(2**15)
            except WantReadError:
                break
            except ZeroReturnError:
                if self.close_notify_received():
                    break
                # Twisted's way: answer with our close_notify and close.
                self._shutdownTLS()
                self._tlsShutdownFinished(None)
            except Error:
                self._tlsShutdownFinished(Failure())
            else:
                if not self._aborted:
                    ProtocolWrapper.dataReceived(self, data)
        if self._tlsConnection is not None:
            # (The connection may have been lost meanwhile: a half-closed
            # TCP transport closes at once.)
            TLSMemoryBIOProtocol._flushSendBIO(self)
