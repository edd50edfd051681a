"""
Tests for L{twisted_echo.listening.certificate}: the one builder of
throwaway certificates, used by the TLS layer's check and the test servers.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile

from cryptography import x509
from twisted.trial.unittest import TestCase

from twisted_echo.listening.certificate import self_signed_certificate
from twisted_echo.listening.tls import tls_layer_misfit
from twisted_echo.testing.spawn import make_certificate


class CertificateTests(TestCase):
    def test_names_and_ca(self) -> None:
        _, certificate = self_signed_certificate()
        names = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        self.assertEqual(names.get_values_for_type(x509.DNSName), ["localhost"])
        self.assertEqual(
            names.get_values_for_type(x509.IPAddress),
            [ipaddress.ip_address("127.0.0.1")],
        )
        constraints = certificate.extensions.get_extension_for_class(
            x509.BasicConstraints
        ).value
        self.assertTrue(constraints.ca)

    def test_test_servers_files(self) -> None:
        """
        C{make_certificate} writes the same builder's certificate as PEM
        files a client can load.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        cert_path, key_path = make_certificate(directory)
        self.assertEqual(os.path.dirname(cert_path), directory)
        with open(cert_path, "rb") as f:
            certificate = x509.load_pem_x509_certificate(f.read())
        self.assertEqual(certificate.subject.rfc4514_string(), "CN=localhost")
        with open(key_path, "rb") as f:
            self.assertIn(b"BEGIN PRIVATE KEY", f.read())

    def test_tls_check_still_passes(self) -> None:
        """
        The TLS layer's start-up check, which converses in memory with this
        builder's certificate, finds the layer fits.
        """
        self.assertIsNone(tls_layer_misfit())
