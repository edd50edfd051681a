"""
Real TLS for tests: throwaway certificates, sockecho TLS listeners on
127.0.0.1 port 0, and a client made with Python's C{ssl} module that
half-closes the TLS way (close_notify, then reading the reply).
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import ssl
import subprocess
import time
import unittest as pyunit
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater

from tests.process import IO_TIMEOUT, missing, temp_dir
from twisted_echo._twisted.transport import use_lean_transport
from twisted_echo.listening.tls import TLSListeningReactor, self_signed_certificate

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Certificate:
    """
    A throwaway self-signed certificate for C{localhost} and 127.0.0.1.

    @ivar key: path of its private key (PEM).
    @ivar cert: path of the certificate (PEM).
    """

    key: str
    cert: str


def make_certificate(case: pyunit.TestCase, name: str = "localhost") -> Certificate:
    """
    Write a self-signed certificate for C{name} and 127.0.0.1 (made with
    C{cryptography}) to a directory removed when C{case} ends.
    """
    key, certificate = self_signed_certificate(name)
    directory = temp_dir(case)
    paths = Certificate(
        os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
    )
    with open(paths.key, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(paths.cert, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    return paths


def ssl_description(certificate: Certificate, port: int = 0) -> str:
    """
    @return: the C{ssl:} server endpoint string for C{certificate} on
        127.0.0.1.
    """
    return (
        f"ssl:{port}:interface={HOST}:privateKey={certificate.key}"
        f":certKey={certificate.cert}"
    )


def serve_tls(case: pyunit.TestCase, factory: Factory, certificate: Certificate) -> Any:
    """
    Listen with C{factory} over TLS on 127.0.0.1, a free port, as
    C{twistd sockecho --echo ssl:...} does (sockecho's TLS layer, the lean
    TCP transport); stop at clean-up.

    @return: the listening port.
    """
    endpoint = serverFromString(
        TLSListeningReactor(reactor), ssl_description(certificate)
    )
    results: list[Any] = []
    endpoint.listen(factory).addBoth(results.append)
    [port] = results
    use_lean_transport(port)
    tls_factory = port.factory

    async def cleanup() -> None:
        # Let the connections the test made close, then abort the rest, so
        # the reactor is clean.
        await maybeDeferred(port.stopListening)
        for _ in range(500):
            if not tls_factory.protocols:
                return
            await deferLater(reactor, 0.01, lambda: None)
        for protocol in list(tls_factory.protocols):
            protocol.transport.abortConnection()
        await deferLater(reactor, 0.05, lambda: None)

    case.addCleanup(lambda: Deferred.fromCoroutine(cleanup()))
    return port


@dataclass
class HalfCloseResult:
    """
    What L{python_half_close} saw.

    @ivar received: the reply's bytes.
    @ivar close_notify: whether the server's close_notify came.
    @ivar eof: whether the server closed TCP.
    @ivar version: the TLS version negotiated.
    """

    received: bytes
    close_notify: bool
    eof: bool
    version: str | None


def python_half_close(
    port: int,
    payload: bytes,
    cafile: str,
    version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
    fin: bool = False,
    notify: bool = True,
    timeout: float = 30.0,
) -> HalfCloseResult:
    """
    With Python's C{ssl} module (OpenSSL), on a non-blocking socket: send
    C{payload} over TLS C{version}, then close_notify (C{unwrap()}), then
    with C{fin} a TCP FIN, and read until the server's close_notify and
    TCP close. Reads all along, so neither side's buffers fill. Without
    C{notify}, no close_notify is sent (a truncated stream: only the FIN).

    @raise AssertionError: when the server did not finish in C{timeout}
        seconds.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile)
    context.minimum_version = context.maximum_version = version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    received = bytearray()
    sent = 0
    handshaken = close_notify = eof = closing = fin_sent = False
    pending = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.setblocking(False)
        while time.monotonic() < deadline:
            if not handshaken:
                try:
                    tls.do_handshake()
                    handshaken = True
                except ssl.SSLWantReadError:
                    pass
            if handshaken and sent < len(payload):
                sent += tls.write(payload[sent : sent + 65536])
            if handshaken and sent == len(payload) and not closing:
                closing = True
                try:
                    if notify:
                        tls.unwrap()
                except ssl.SSLWantReadError:
                    # close_notify is out; the server's has not come yet.
                    pass
            pending += outgoing.read()
            if fin and closing and not pending and not fin_sent:
                sock.shutdown(socket.SHUT_WR)
                fin_sent = True
            readable, writable, _ = select.select(
                [sock], [sock] if pending else [], [], 0.2
            )
            if writable:
                try:
                    pending = pending[sock.send(pending) :]
                except BlockingIOError:
                    pass
            if readable:
                try:
                    data = sock.recv(1 << 20)
                except ConnectionResetError:
                    data = b""
                if data:
                    incoming.write(data)
                else:
                    eof = True
                    incoming.write_eof()
            while handshaken and not close_notify:
                try:
                    chunk = tls.read(1 << 20)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    close_notify = True
                    break
                except ssl.SSLEOFError:
                    break
                if not chunk:
                    close_notify = True
                    break
                received += chunk
            if eof:
                return HalfCloseResult(
                    bytes(received), close_notify, eof, tls.version()
                )
    raise AssertionError(
        f"the server did not close within {timeout} s "
        f"({len(received)} of {len(payload)} bytes back)"
    )


def _is_openssl(path: str) -> bool:
    try:
        result = subprocess.run(
            [path, "version"], capture_output=True, text=True, timeout=IO_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.stdout.startswith("OpenSSL")


def require_openssl(case: pyunit.TestCase) -> str:
    """
    @return: the path of the C{openssl} program: the test is skipped when it
        is missing, or fails when C{CI} is set (C{.ci/run} installs it).
    """
    path = shutil.which("openssl")
    if path is None or not _is_openssl(path):
        missing(case, "'openssl' (OpenSSL's command line tool) is not installed",
                "apt-get install -y openssl")  # fmt: skip
    assert path is not None
    return path


def s_client_exchange(
    openssl: str,
    port: int,
    cafile: str,
    send: bytes,
    expect: bytes,
    options: tuple[str, ...] = (),
    timeout: float = IO_TIMEOUT,
) -> tuple[bytes, str, int]:
    """
    Run C{openssl s_client} against 127.0.0.1:C{port}, verifying the server
    with C{cafile} for C{localhost}: send C{send}, read until C{expect}
    came (or C{timeout}), then end its input, on which it sends close_notify
    and exits.

    @return: its standard output, standard error and exit status.
    """
    command = [
        openssl, "s_client", "-connect", f"{HOST}:{port}", "-CAfile", cafile,
        "-verify_return_error", "-servername", "localhost", "-brief", *options,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(send)
        process.stdin.flush()
        out = bytearray()
        deadline = time.monotonic() + timeout
        descriptor = process.stdout.fileno()
        while expect not in out and time.monotonic() < deadline:
            readable, _, _ = select.select([descriptor], [], [], 0.2)
            if readable:
                chunk = os.read(descriptor, 65536)
                if not chunk:
                    break
                out += chunk
        process.stdin.close()
        process.stdin = None  # (ended: communicate() must not flush it)
        rest, err = process.communicate(timeout=timeout)
        return bytes(out + rest), err.decode("utf-8", "replace"), process.returncode
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
