# -*- test-case-name: tests.test_client_tls -*-
"""
C{sockecho-client} over TLS: C{ssl:HOST:PORT} endpoints.

The server's certificate is verified, against the system's trust store by
default or against the certificates of a PEM file (C{--ca FILE}), and must
name the host connected to (or C{--servername NAME}), which is also sent as
the server name (SNI) unless it is an IP address. C{--insecure} skips
verification, for self-signed test certificates.

Connecting over TLS waits for the handshake: a refused certificate or a
failed handshake is one line (L{TLSHandshakeError}), e.g. C{TLS handshake
failed: certificate not trusted: self-signed certificate (CN=localhost)}.

Connections use sockecho's TLS layer (L{twisted_echo.listening.tls}): a client's
C{loseWriteConnection()} sends close_notify and it goes on reading until the
server's, so C{check}, C{chat} and C{load} half-close over TLS 1.3 as they do
over TCP.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_echo.client.errors import ClientUsageError
from twisted_echo.listening.tls import (
    HalfCloseTLSProtocol,
    tls_factory,
    tls_layer_problem,
)

#: Words for the certificate verification errors people meet (OpenSSL's
#: X509_V_ERR_* codes).
X509_ERRORS = {
    2: "unable to get issuer certificate",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate (unknown CA)",
    21: "unable to verify the first certificate",
    23: "certificate revoked",
    24: "invalid CA certificate",
    26: "unsupported certificate purpose",
}
#: OpenSSL's words when what came back is not a TLS server's handshake.
NOT_TLS = ("wrong version number", "packet length too long", "unexpected message")
HINT_TRUST = "--ca FILE trusts it; --insecure skips the check, for test certificates"
HINT_NAME = "--servername NAME sets the name expected"


class TLSSettingsError(ClientUsageError):
    """
    A TLS option cannot be used (no such CA file); C{str()} is one line.
    """


class TLSHandshakeError(Exception):
    """
    The TLS handshake failed or the server's certificate was refused;
    C{str()} is one line saying why.
    """


@dataclass(frozen=True)
class TLSSettings:
    """
    How a client checks the server.

    @ivar ca_file: a PEM file of certificates to trust instead of the
        system's trust store, or L{None}.
    @ivar insecure: accept any certificate (test certificates only).
    @ivar server_name: the name expected in the certificate and sent as
        SNI, or L{None} for the host connected to.
    """

    ca_file: str | None = None
    insecure: bool = False
    server_name: str | None = None


@dataclass(frozen=True)
class TLSTarget:
    """
    A TLS server as C{ssl:HOST:PORT[:hostname=NAME][:timeout=S][:bindAddress=H]}
    names it.

    @ivar host: the host name or address literal to connect to.
    @ivar port: its TCP port.
    @ivar server_name: the name verified and sent as SNI (C{hostname=}),
        or L{None} for the host.
    @ivar timeout: seconds to connect.
    @ivar bind_address: the local address to connect from, or L{None}.
    """

    host: str
    port: int
    server_name: str | None = None
    timeout: float = 30.0
    bind_address: str | None = None

    def __str__(self) -> str:
        host = self.host.replace(":", "\\:")
        return f"ssl:{host}:{self.port}"


_KEYWORDS = ("host", "port", "hostname", "timeout", "bindAddress")


def is_tls_endpoint(description: str) -> bool:
    """
    @return: whether C{description} names a TLS server (C{ssl:...}).
    """
    return description.strip().lower().startswith("ssl:")


def parse_tls_endpoint(description: str) -> TLSTarget:
    """
    Parse C{ssl:HOST:PORT[:hostname=NAME][:timeout=S][:bindAddress=H]}
    (Twisted's C{ssl:} client syntax, keyword forms C{host=} and C{port=}
    too). Colons in an IPv6 address are escaped (C{ssl:\\:\\:1:7207}) or
    the address is bracketed (C{ssl:[::1]:7207}).

    @raise ValueError: saying what is wrong.
    """
    kind, _, rest = description.strip().partition(":")
    if kind.lower() != "ssl":
        raise ValueError("not an ssl: endpoint")
    positional, parts = split_endpoint_fields(rest)
    fields: dict[str, str] = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if eq:
            if key not in _KEYWORDS:
                raise ValueError(
                    f"unknown parameter {key!r} (ssl: takes HOST:PORT, "
                    "hostname=, timeout=, bindAddress=; see --ca, --insecure)"
                )
            fields[key] = value
        else:
            positional.append(part)
    for key, value in zip(("host", "port"), positional, strict=False):
        if key in fields:
            raise ValueError(f"{key} given twice")
        fields[key] = value
    if len(positional) > 2 or "host" not in fields or "port" not in fields:
        raise ValueError("expected ssl:HOST:PORT")
    if not fields["host"]:
        raise ValueError("empty host")
    try:
        port = int(fields["port"])
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ValueError(f"port {fields['port']!r} is not 1-65535")
    try:
        timeout = float(fields.get("timeout", "30"))
    except ValueError:
        timeout = -1.0
    if not timeout > 0:
        raise ValueError(f"timeout {fields['timeout']!r} is not a positive number")
    return TLSTarget(
        fields["host"],
        port,
        fields.get("hostname") or None,
        timeout,
        fields.get("bindAddress") or None,
    )



def split_endpoint_fields(rest: str) -> tuple[list[str], list[str]]:
    """
    Split what follows an endpoint string's C{KIND:} into its fields, as
    Twisted's endpoint syntax does: fields are separated by C{:}, a
    backslash escapes the next character (C{\\:\\:1}); a leading
    bracketed host (C{[::1]:7207}) is one field.

    @param rest: the endpoint string after C{KIND:}.
    @return: the bracketed host (a list of zero or one) and the other
        fields, in order, unescaped.
    @raise ValueError: a C{[} not closed by C{]} followed by C{:} or the end.
    """
    positional: list[str] = []
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket or not (after == "" or after.startswith(":")):
            raise ValueError("unclosed '['")
        positional.append(host)
        rest = after[1:]
    part = ""
    parts: list[str] = []
    escaped = False
    for char in rest:
        if escaped:
            part += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append(part)
            part = ""
        else:
            part += char
    if rest:
        parts.append(part)
    return positional, parts

def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _subject(certificate: Any) -> str:
    """
    @return: C{"CN=..."} of a pyOpenSSL certificate.
    """
    from cryptography.x509.oid import NameOID

    try:
        names = certificate.to_cryptography().subject.get_attributes_for_oid(
            NameOID.COMMON_NAME
        )
        name = names[0].value if names else None
    except Exception:
        name = None
    return f"CN={name}" if name else "no common name"


def _names_in(certificate: Any) -> list[str]:
    """
    @return: the DNS names and IP addresses a certificate is for.
    """
    from service_identity import pyopenssl

    extract = getattr(pyopenssl, "extract_patterns", None) or pyopenssl.extract_ids
    names = []
    for pattern in extract(certificate):
        value = getattr(pattern, "pattern", None)
        if isinstance(value, bytes):
            names.append(value.decode("ascii", "replace"))
        elif value is not None:
            names.append(str(value))
    return names


@implementer(IOpenSSLClientConnectionCreator)
class ClientTLSCreator:
    """
    Builds the OpenSSL connection of each TLS client connection: TLS 1.2 or
    later, the server's certificate verified (unless insecure) for
    L{name}, SNI sent for a DNS name.

    When it refuses a certificate, it says why in the connection's
    L{HalfCloseTLSProtocol.verify_problem}.

    @ivar name: the name the certificate must be for.
    """

    def __init__(self, name: str, settings: TLSSettings) -> None:
        """
        @raise TLSSettingsError: when the CA file cannot be read.
        """
        self.name = name
        self.settings = settings
        self._ip = _is_ip_address(name)
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        if settings.insecure:
            context.set_verify(SSL.VERIFY_NONE)
        else:
            context.set_verify(
                SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._verify
            )
            if settings.ca_file is not None:
                if not os.path.isfile(settings.ca_file):
                    raise TLSSettingsError(f"--ca {settings.ca_file!r}: no such file")
                try:
                    context.load_verify_locations(settings.ca_file)
                except SSL.Error:
                    raise TLSSettingsError(
                        f"--ca {settings.ca_file!r}: no PEM certificate in it"
                    ) from None
            else:
                context.set_default_verify_paths()
        self._context = context

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N803
        """
        L{IOpenSSLClientConnectionCreator}: the connection for one TLS
        client connection. Its app data is the TLS protocol, where
        L{_verify} says why it refused a certificate (Twisted 24.7 leaves
        setting it to the creator).
        """
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if not self._ip:
            try:
                import idna

                server_name = idna.encode(self.name)
            except Exception:
                server_name = self.name.encode("ascii", "replace")
            connection.set_tlsext_host_name(server_name)
        return connection

    def _verify(
        self,
        connection: SSL.Connection,
        certificate: Any,
        code: int,
        depth: int,
        ok: int,
    ) -> bool:
        protocol = connection.get_app_data()
        try:
            if not ok:
                reason = X509_ERRORS.get(code, f"verify error {code}")
                self._refuse(
                    protocol,
                    f"certificate not trusted: {reason} "
                    f"({_subject(certificate)}); {HINT_TRUST}",
                )
                return False
            if depth == 0:
                problem = self._identity_problem(certificate)
                if problem is not None:
                    self._refuse(protocol, problem)
                    return False
            return True
        except Exception as e:
            self._refuse(protocol, f"cannot check the certificate: {e!r}")
            return False

    def _refuse(self, protocol: object, problem: str) -> None:
        if getattr(protocol, "verify_problem", None) is None:
            try:
                protocol.verify_problem = problem  # type: ignore[attr-defined]
            except AttributeError:
                pass

    def _identity_problem(self, certificate: Any) -> str | None:
        """
        @return: why C{certificate} is not for L{name}, or L{None}.
        """
        from service_identity import pyopenssl
        from service_identity.exceptions import CertificateError, VerificationError
        from service_identity.hazmat import (
            DNS_ID,
            IPAddress_ID,
            verify_service_identity,
        )

        extract = getattr(pyopenssl, "extract_patterns", None) or pyopenssl.extract_ids
        wanted = IPAddress_ID(self.name) if self._ip else DNS_ID(self.name)
        try:
            verify_service_identity(
                extract(certificate), obligatory_ids=[wanted], optional_ids=[]
            )
        except VerificationError:
            names = ", ".join(_names_in(certificate)) or "no name"
            return f"the certificate is for {names}, not {self.name!r}; {HINT_NAME}"
        except CertificateError as e:
            return f"the certificate names no host ({e}); {HINT_NAME}"
        return None


def explain_handshake_failure(reason: BaseException, protocol: object) -> str:
    """
    @param reason: why the connection was lost before its handshake ended.
    @param protocol: the connection's TLS protocol.
    @return: one line, C{"TLS handshake failed: ..."}.
    """
    problem = getattr(protocol, "verify_problem", None)
    if problem is not None:
        return f"TLS handshake failed: {problem}"
    if isinstance(reason, SSL.SysCallError):
        # (errno, text): -1 and "Unexpected EOF" when the server closed.
        code, text = (tuple(reason.args) + (None, ""))[:2]
        if code == -1 or not text or "eof" in str(text).lower():
            return "TLS handshake failed: the server closed the connection"
        return f"TLS handshake failed: {text}"
    if isinstance(reason, SSL.Error):
        queue = reason.args[0] if reason.args else []
        reasons = [
            entry[-1]
            for entry in (queue if isinstance(queue, list) else [])
            if isinstance(entry, tuple) and entry and entry[-1]
        ]
        text = reasons[-1] if reasons else ""
        if not text or text.lower().startswith("unexpected eof"):
            return "TLS handshake failed: the server closed the connection"
        if text in NOT_TLS:
            return f"TLS handshake failed: {text} (is the server speaking TLS?)"
        return f"TLS handshake failed: {text}"
    if isinstance(reason, error.ConnectionDone | error.ConnectionLost):
        return "TLS handshake failed: the server closed the connection"
    text = str(reason).strip().splitlines()
    return f"TLS handshake failed: {text[0] if text else type(reason).__name__}"


_warned: list[bool] = []


@implementer(IStreamClientEndpoint)
class TLSClientEndpoint:
    """
    Connects over TCP, then TLS (L{twisted_echo.listening.tls}); the connection is
    handed over once the handshake is done and the certificate accepted.
    """

    def __init__(self, reactor: Any, target: TLSTarget, settings: TLSSettings) -> None:
        """
        @raise TLSSettingsError: when the settings cannot be used (no CA
            file).
        """
        self._reactor = reactor
        self.target = target
        self.settings = settings
        name = settings.server_name or target.server_name or target.host
        self.creator = ClientTLSCreator(name, settings)

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:  # noqa: N803
        """
        L{IStreamClientEndpoint.connect}.
        """
        target = self.target
        wrapper = tls_factory(
            self.creator, True, protocolFactory, self._reactor, str(target)
        )
        if tls_layer_problem() is not None and not _warned:
            _warned.append(True)
            print(
                "sockecho-client: warning: Twisted's TLS layer is not as "
                f"expected ({tls_layer_problem()}); half-close over TLS will "
                "not work",
                file=sys.stderr,
            )
        bind = (target.bind_address, 0) if target.bind_address else None
        tcp = TCP4ClientEndpoint(
            self._reactor, target.host, target.port, target.timeout, bind
        )
        connecting: Deferred[Any] = tcp.connect(wrapper)
        return connecting.addCallback(self._handshake)

    def _handshake(self, protocol: Any) -> Any:
        if not isinstance(protocol, HalfCloseTLSProtocol):
            return protocol.wrappedProtocol
        wrapped = protocol.wrappedProtocol

        def failed(failure: Failure) -> None:
            from twisted.internet.defer import CancelledError

            if failure.check(CancelledError):
                failure.raiseException()
            raise TLSHandshakeError(
                explain_handshake_failure(failure.value or Exception(), protocol)
            )

        waiting = protocol.when_handshaken()
        waiting.addCallbacks(lambda _: wrapped, failed)
        return waiting
