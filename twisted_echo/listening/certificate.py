# -*- test-case-name: tests.test_certificate -*-
"""
The one builder of throwaway self-signed certificates: for the TLS layer's
start-up check (L{twisted_echo.listening.tls}) and for test servers
(L{twisted_echo.testing.spawn.make_certificate}). Imports no Twisted
(C{cryptography} only, when called).
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import Any


def self_signed_certificate(
    name: str = "localhost", days: int = 1, address: str = "127.0.0.1"
) -> tuple[Any, Any]:
    """
    Make a throwaway self-signed certificate (EC P-256, SHA-256) for the
    host C{name} and the IP C{address}, valid from five minutes ago for
    C{days} days, and its own CA (C{BasicConstraints ca=True}, so a client
    can trust it as its CA file).

    @param name: the DNS name (and common name).
    @param days: how long it is valid, in days.
    @param address: the IP address it also names.
    @return: C{(private key, certificate)} as C{cryptography} objects.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(name),
                    x509.IPAddress(ipaddress.ip_address(address)),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def write_pem(key: Any, certificate: Any, cert_path: str, key_path: str) -> None:
    """
    Write C{certificate} and C{key} (unencrypted PKCS#8) as PEM files.

    @raise OSError: if a file cannot be written.
    """
    from cryptography.hazmat.primitives import serialization

    with open(cert_path, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


__all__ = ["self_signed_certificate", "write_pem"]
