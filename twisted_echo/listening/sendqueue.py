# -*- test-case-name: tests.test_sendqueue -*-
"""
What the peer of a TCP connection has taken, and what the kernel still
holds for it, read from the kernel (Linux only).

Twisted's queue is only the first of two: whatever a socket's C{send}
accepted waits in the kernel's send queue until the peer acknowledges it,
and on loopback the kernel autotunes that queue to several megabytes
(C{net.ipv4.tcp_wmem}). A peer's progress is therefore measured where it
happens, by the bytes it acknowledged:

 - L{bytes_acked}: C{tcpi_bytes_acked} of C{getsockopt(IPPROTO_TCP,
   TCP_INFO)} (RFC 4898 C{tcpEStatsAppHCThruOctetsAcked}, Linux 4.1 and
   later; the layout of C{struct tcp_info} in C{include/uapi/linux/tcp.h});
 - L{kernel_unsent}: C{ioctl(SIOCOUTQ)} (the same request as C{TIOCOUTQ},
   see C{tcp(7)}): bytes in the send queue not yet acknowledged by the peer,
   sent or not.

Both return L{None} where the kernel does not say (another system, a UNIX
socket, a closed socket, an older kernel); callers then keep to what
Twisted's own queue shows.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import sys
import termios

#: Where C{tcpi_bytes_acked} (C{__u64}) lies in C{struct tcp_info}: after 8
#: one-byte fields, 24 C{__u32} fields and 2 C{__u64} pacing rates.
BYTES_ACKED_OFFSET = 8 + 24 * 4 + 2 * 8
#: C{tcpi_bytes_received}, the next field (the tests check both).
BYTES_RECEIVED_OFFSET = BYTES_ACKED_OFFSET + 8
#: Bytes of C{struct tcp_info} asked for: up to C{tcpi_bytes_received}.
TCP_INFO_SIZE = BYTES_RECEIVED_OFFSET + 8

_U64 = struct.Struct("=Q")
_INT = struct.Struct("=i")
_INT_BUFFER = bytes(_INT.size)

#: Whether this system has the counters at all (Linux, with C{TCP_INFO}).
AVAILABLE = sys.platform.startswith("linux") and hasattr(socket, "TCP_INFO")
#: C{SIOCOUTQ} on Linux (C{termios.TIOCOUTQ}, 0x5411).
SIOCOUTQ: int = getattr(termios, "TIOCOUTQ", 0x5411)


def tcp_info_field(sock: socket.socket, offset: int) -> int | None:
    """
    @param sock: a TCP socket.
    @param offset: where the C{__u64} field lies in C{struct tcp_info}.
    @return: the field, or L{None} when the kernel's C{struct tcp_info} is
        shorter (an older kernel), the socket is not TCP or is closed, or
        the system is not Linux.
    """
    if not AVAILABLE:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
    except (OSError, ValueError):
        return None
    if len(info) < offset + 8:
        return None
    value: int = _U64.unpack_from(info, offset)[0]
    return value


def bytes_acked(sock: socket.socket) -> int | None:
    """
    @param sock: a TCP socket.
    @return: the bytes the peer has acknowledged on C{sock} since it
        connected (C{tcpi_bytes_acked}), or L{None} where the kernel does
        not say.
    """
    return tcp_info_field(sock, BYTES_ACKED_OFFSET)


def kernel_unsent(sock: socket.socket) -> int | None:
    """
    @param sock: a TCP socket.
    @return: the bytes in C{sock}'s kernel send queue that the peer has not
        acknowledged yet (C{SIOCOUTQ}), or L{None} where the kernel does not
        say.
    """
    if not AVAILABLE:
        return None
    try:
        result = fcntl.ioctl(sock.fileno(), SIOCOUTQ, _INT_BUFFER)
    except (OSError, ValueError):
        return None
    unsent: int = _INT.unpack(result)[0]
    return unsent
