# -*- test-case-name: tests.test_echo -*-
"""
TCP echo, RFC 862: every byte the peer sends comes back unchanged, in order.
"""

from __future__ import annotations

from twisted_echo.services.stream import StreamFactory, StreamProtocol


class Echo(StreamProtocol):
    """
    RFC 862 echo over TCP, byte-transparent, with half-close and flow control
    (see L{twisted_echo.services.stream}).
    """

    def handle_data(self, data: bytes) -> None:
        """
        Send C{data} (bytes) straight back.
        """
        self.send(data)


class EchoFactory(StreamFactory):
    """
    Builds L{Echo} protocols.
    """

    protocol = Echo
    service_name = "echo"
