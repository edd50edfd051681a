"""
An example: testing your own network client against a real sockecho with
the C{sockecho} pytest fixture (installed with sockecho; nothing to
configure).

Run it with C{pytest examples/test_my_client.py}.
"""

from __future__ import annotations

import socket


def shout(host: str, port: int, text: str, timeout: float = 5.0) -> str:
    """
    The client under test: send C{text} to an upper-case echo service and
    return its reply, reading until the server closes.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(text.encode("utf-8"))
        sock.shutdown(socket.SHUT_WR)
        reply = b"".join(iter(lambda: sock.recv(65536), b""))
    return reply.decode("utf-8")


def ping(host: str, port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    """
    Another client under test: one UDP datagram, one reply.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(payload, (host, port))
        return sock.recv(65535)


def test_shout(sockecho) -> None:  # type: ignore[no-untyped-def]
    host, port = sockecho.upper
    assert shout(host, port, "hello straße") == "HELLO STRASSE"


def test_large_message(sockecho) -> None:  # type: ignore[no-untyped-def]
    text = "x" * 1_000_000
    assert shout(*sockecho.upper, text) == text.upper()


def test_ping(sockecho) -> None:  # type: ignore[no-untyped-def]
    assert ping(*sockecho.udp, b"ping") == b"ping"


def test_banner(sockecho_factory) -> None:  # type: ignore[no-untyped-def]
    server = sockecho_factory(banner="Hi from the test")
    with socket.create_connection(server.welcome, timeout=5) as sock:
        assert sock.makefile("rb").readline() == b"Hi from the test\r\n"
