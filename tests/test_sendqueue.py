"""
Tests for L{twisted_echo.listening.sendqueue}: the kernel's counters of a TCP
connection, on real loopback sockets.
"""

from __future__ import annotations

import socket

from twisted.trial.unittest import TestCase

from tests.loopback import wait_until
from twisted_echo.listening import sendqueue
from twisted_echo.listening.sendqueue import (
    BYTES_RECEIVED_OFFSET,
    bytes_acked,
    kernel_unsent,
    tcp_info_field,
)


def connected_pair(case: TestCase) -> tuple[socket.socket, socket.socket]:
    """
    @return: the two ends of a TCP connection over 127.0.0.1 (default
        buffers), closed at clean-up.
    """
    listener = socket.socket()
    case.addCleanup(listener.close)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname(), 10)
    server, _ = listener.accept()
    for sock in (client, server):
        case.addCleanup(sock.close)
    server.settimeout(10)
    return client, server


class KernelCountersTests(TestCase):
    """
    The counters read where Linux has them; L{None} elsewhere.
    """

    def setUp(self) -> None:
        if not sendqueue.AVAILABLE:
            raise self.skipTest("TCP_INFO and SIOCOUTQ are Linux's")

    async def test_acknowledged_and_unsent(self) -> None:
        """
        Bytes sent and not read wait in the kernel (unsent or
        unacknowledged: at least what the reader's buffer cannot hold);
        once the peer reads everything, every byte is acknowledged (the
        count starts at 1: the SYN) and the queue is empty. The receiving
        end's C{tcpi_bytes_received}, the next field, counts the same
        bytes: the layout of C{struct tcp_info} is read right.
        """
        client, server = connected_pair(self)
        start = bytes_acked(client)
        self.assertIn(start, (0, 1))
        assert start is not None
        size = 64 << 20
        client.setblocking(False)
        sent = 0
        try:
            while sent < size:
                sent += client.send(b"x" * (1 << 20))
        except BlockingIOError:
            pass
        unsent = kernel_unsent(client)
        assert unsent is not None
        self.assertGreater(unsent, 0)
        self.assertLessEqual(unsent, sent)
        received = 0
        while received < sent:
            received += len(server.recv(1 << 20))
        await wait_until(lambda: bytes_acked(client) == start + sent)
        await wait_until(lambda: kernel_unsent(client) == 0)
        self.assertEqual(tcp_info_field(server, BYTES_RECEIVED_OFFSET), sent)

    def test_not_tcp_or_closed(self) -> None:
        """
        A UNIX socket has no C{TCP_INFO}; a closed socket has no counters.
        """
        left, right = socket.socketpair()
        self.addCleanup(left.close)
        self.addCleanup(right.close)
        self.assertIsNone(bytes_acked(left))
        client, _ = connected_pair(self)
        client.close()
        self.assertIsNone(bytes_acked(client))
        self.assertIsNone(kernel_unsent(client))

    def test_unavailable(self) -> None:
        """
        Where the system has no such counters, both say L{None}.
        """
        self.patch(sendqueue, "AVAILABLE", False)
        client, _ = connected_pair(self)
        self.assertIsNone(bytes_acked(client))
        self.assertIsNone(kernel_unsent(client))
