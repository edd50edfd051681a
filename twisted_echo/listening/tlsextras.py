# -*- test-case-name: tests.test_tlsextras -*-
"""
sockecho's own parameters of an C{ssl:} listener, beside Twisted's
(C{privateKey=}, C{certKey=}, ...; Twisted's C{ssl:} server endpoint can
neither ask for a client certificate nor offer ALPN):

 - C{clientCA=FILE}: ask every client for a certificate and verify the one
   it sends against the CA certificates of C{FILE} (PEM); their names are
   sent in the certificate request (RFC 8446 4.3.2, RFC 5246 7.4.4). A
   client may send none (it is then served, the record's C{client_subject}
   null); one that does not verify fails the handshake (C{tls_error}).
 - C{alpn=P1,P2,...}: the application protocols offered (RFC 7301); of
   those the client offers, the first in this list is chosen. A client
   offering none of them goes on without ALPN (the record's C{alpn} null),
   as RFC 7301 3.2 allows a server that does not reject.

They are taken out of the description before Twisted's parser reads it
(L{split_tls_extras}) and set on the listener's OpenSSL context when it
listens (L{TLSExtras.apply}, from
L{twisted_echo.listening.tls.TLSListeningReactor}).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from OpenSSL import SSL, crypto

from twisted_echo.listening.endpoints import EndpointDescription

#: The parameter naming the PEM file of CA certificates client
#: certificates must chain to.
CLIENT_CA = "clientCA"
#: The parameter listing the ALPN protocols offered, comma-separated.
ALPN = "alpn"
#: The longest protocol name ALPN carries (RFC 7301 3.1), bytes.
MAX_PROTOCOL = 255
#: The session ID context set when client certificates are asked for:
#: OpenSSL refuses to resume a session without one once it verifies peers.
SESSION_ID_CONTEXT = b"sockecho"
_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True)
class TLSExtras:
    """
    sockecho's parameters of one C{ssl:} listener.

    @ivar client_ca: the path of the PEM file of CA certificates a client's
        certificate must chain to, or L{None}: no certificate asked for.
    @ivar alpn: the ALPN protocols offered, in order of preference (empty:
        no ALPN).
    """

    client_ca: str | None = None
    alpn: tuple[bytes, ...] = ()

    def __bool__(self) -> bool:
        return self.client_ca is not None or bool(self.alpn)

    def apply(self, context: SSL.Context) -> None:
        """
        Set these parameters on a listener's OpenSSL context.

        @param context: the context every connection of the listener uses.
        @raise SSL.Error: when OpenSSL cannot read C{client_ca} (it was
            checked by L{split_tls_extras}, so only if it changed since).
        """
        if self.client_ca is not None:
            path = self.client_ca.encode()
            context.load_verify_locations(path)
            context.load_client_ca(path)
            context.set_verify(SSL.VERIFY_PEER)
            context.set_session_id(SESSION_ID_CONTEXT)
        if self.alpn:
            offered = self.alpn

            def select(connection: SSL.Connection, protocols: list[bytes]) -> object:
                for protocol in offered:
                    if protocol in protocols:
                        return protocol
                return SSL.NO_OVERLAPPING_PROTOCOLS

            context.set_alpn_select_callback(select)  # type: ignore[arg-type]


def split_tls_extras(description: EndpointDescription) -> tuple[str, TLSExtras]:
    """
    Take sockecho's own parameters out of an C{ssl:} description.

    @param description: a parsed C{ssl:} listener description.
    @return: the description for Twisted's parser (C{inner} without
        C{clientCA=} and C{alpn=}), and the parameters taken.
    @raise ValueError: with one line saying what is wrong: a C{clientCA=}
        file that cannot be read or holds no PEM certificate, an empty
        C{alpn=} protocol or one over 255 bytes.
    """
    client_ca = description.option(CLIENT_CA)
    alpn_text = description.option(ALPN)
    if client_ca is None and alpn_text is None:
        return description.inner, TLSExtras()
    if client_ca is not None:
        _check_ca_file(client_ca)
    alpn: tuple[bytes, ...] = ()
    if alpn_text is not None:
        alpn = tuple(name.strip().encode("utf-8") for name in alpn_text.split(","))
        if not all(0 < len(name) <= MAX_PROTOCOL for name in alpn):
            raise ValueError(
                f"alpn= takes protocol names separated by commas, each of 1 to "
                f"{MAX_PROTOCOL} bytes, not {alpn_text!r}"
            )
    return description.without(CLIENT_CA, ALPN), TLSExtras(client_ca, alpn)


def _check_ca_file(path: str) -> None:
    try:
        pem = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"clientCA={path}: {e.strerror or e}") from None
    try:
        if _PEM_CERTIFICATE not in pem:
            raise ValueError("no certificate in it")
        crypto.load_certificate(crypto.FILETYPE_PEM, pem)
    except (ValueError, crypto.Error):
        raise ValueError(
            f"clientCA={path}: not a PEM file of CA certificates"
        ) from None


__all__ = ["ALPN", "CLIENT_CA", "TLSExtras", "split_tls_extras"]
