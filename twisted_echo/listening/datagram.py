# -*- test-case-name: tests.test_datagram -*-
"""
The datagram port: L{DatagramPort}, the L{udp.Port} that sockecho's UDP
services listen on, with what it needs (L{is_wildcard}, packet
information: L{turn_on_pktinfo}, L{reply_ancillary}) and the check that
Twisted's L{udp.Port} is still as it expects (L{datagram_port_problem}).

Speed: L{DatagramPort} relies on parts of Twisted's L{udp.Port} that are
not all public API (no private name: the constructor's parameters,
C{maxThroughput}, C{addressFamily} and what the stock C{doRead} does);
L{datagram_port_problem} checks at start-up that they are still as
expected, and L{twisted_echo.listening.listen} falls back to the stock
L{udp.Port} when they are not. Adopting an inherited socket into a
L{DatagramPort} takes a private constructor: that part is
L{twisted_echo._twisted.adopt}.

Wildcard listeners (C{0.0.0.0}, C{::}): the kernel picks a reply's source
address from the route back, which on a host with several addresses (a
second address, a pod, a VIP, 127.0.0.2) need not be the address the
client sent to; a connected UDP client (C{nc -u}, most client libraries)
drops such a reply. A L{DatagramPort} bound to a wildcard address
therefore asks the kernel for each datagram's destination (C{IP_PKTINFO},
Linux ip(7); C{IPV6_RECVPKTINFO}, RFC 3542 section 6) and replies from it
with C{sendmsg}, as BIND, Unbound and dnsmasq do. A port bound to one
address keeps the C{recvfrom_into}/C{sendto} path.
"""

from __future__ import annotations

import errno
import inspect
import ipaddress
import socket
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import udp
from twisted.internet.interfaces import ISystemHandle
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python import log

__all__ = [
    "MAX_DATAGRAM",
    "Ancillary",
    "DatagramPort",
    "datagram_port_problem",
    "is_wildcard",
    "reply_ancillary",
    "turn_on_pktinfo",
]

#: Largest UDP payload over IPv6 (65535 minus the 8-byte UDP header); IPv4's
#: limit is 65507. Twisted's default read size of 8192 truncates silently.
MAX_DATAGRAM = 65535

_log = Logger()

#: C{IP_PKTINFO} (Linux ip(7)): a socket option that makes C{recvmsg} give
#: each IPv4 datagram's destination as a C{struct in_pktinfo}, and the
#: C{sendmsg} control message that sets a reply's source address. Python's
#: C{socket} module lacks the constant on some versions; it is 8 on Linux.
#: C{None} where it is not known.
IP_PKTINFO: int | None = getattr(
    socket, "IP_PKTINFO", 8 if sys.platform.startswith("linux") else None
)

#: RFC 3542 section 6: the socket option asking for each IPv6 datagram's
#: destination, and the control message (C{struct in6_pktinfo}) giving it
#: on receipt and setting the source address on sending. C{None} where
#: Python does not know them.
IPV6_RECVPKTINFO: int | None = getattr(socket, "IPV6_RECVPKTINFO", None)
IPV6_PKTINFO: int | None = getattr(socket, "IPV6_PKTINFO", None)

#: Room for one C{in6_pktinfo} control message (20 bytes of data), which
#: also holds an C{in_pktinfo} (12).
_ANCILLARY_SPACE = socket.CMSG_SPACE(20) if hasattr(socket, "CMSG_SPACE") else 0

#: An ancillary data item of C{sendmsg}/C{recvmsg}: C{(level, type, data)}.
Ancillary = tuple[int, int, bytes]


def is_wildcard(host: str) -> bool:
    """
    @param host: a local address as bound or given to bind (C{""} is
        Twisted's and the socket module's name for C{0.0.0.0}).
    @return: whether it is a wildcard address (C{0.0.0.0}, C{::}), on which
        a socket receives datagrams sent to any of the host's addresses.
    """
    if host == "":
        return True
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_unspecified
    except ValueError:
        return False


def reply_ancillary(level: int, kind: int, data: bytes) -> list[Ancillary]:
    """
    Say how to send a reply from the address a datagram was sent to.

    IPv4 (C{IPPROTO_IP}, C{IP_PKTINFO}, a C{struct in_pktinfo}: interface
    index, C{ipi_spec_dst}, C{ipi_addr}; Linux ip(7)): the reply goes with
    the received structure, its interface index zeroed. The kernel then
    uses C{ipi_spec_dst}, the local address the datagram was routed to (for
    a broadcast, the receiving interface's address), as the source and
    routes the reply by the routing table (a non-zero index would send it
    out that interface and, per ip(7), put that interface's primary address
    in the source's place). Unbound zeroes it too.

    IPv6 (C{IPPROTO_IPV6}, C{IPV6_PKTINFO}, a C{struct in6_pktinfo}:
    address, interface index; RFC 3542 sections 6.1 and 6.3): the reply
    goes from the received destination address; the interface index is
    zeroed (the routing table chooses, RFC 3542 section 6.3) except for a
    link-local address, which is only valid with its interface. A
    destination that cannot be a source (multicast; an IPv4-mapped
    multicast or limited broadcast, which a dual-stack C{::} socket can
    receive) gets no control message: the kernel picks the source, as it
    did before.

    @param level: the received control message's level.
    @param kind: its type.
    @param data: its data.
    @return: the control messages for C{sendmsg}: one, or none if the
        received one is not a packet-info message or says nothing usable.
    """
    if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
        return [(level, kind, b"\0\0\0\0" + data[4:12])]
    if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= 20:
        address = ipaddress.IPv6Address(data[:16])
        mapped = address.ipv4_mapped
        if address.is_multicast or (
            mapped is not None
            and (mapped.is_multicast or mapped == ipaddress.IPv4Address(0xFFFFFFFF))
        ):
            return []
        index = data[16:20] if address.is_link_local else b"\0\0\0\0"
        return [(level, kind, data[:16] + index)]
    return []


#: The parameters of L{udp.Port.__init__} that L{DatagramPort} passes.
_INIT_PARAMETERS = ["self", "port", "proto", "interface", "maxPacketSize", "reactor"]


def datagram_port_problem(port_class: type = udp.Port) -> str | None:
    """
    Check that Twisted's L{udp.Port} still looks as L{DatagramPort} expects.

    L{DatagramPort} subclasses it and relies on parts that are not all
    public API: C{__init__(port, proto, interface, maxPacketSize, reactor)}
    storing C{protocol} and C{maxPacketSize}; C{startListening()};
    C{doRead()}, which it replaces, and whose stock version must still read
    up to C{maxThroughput} (a positive C{int}, bytes per event), trim IPv6
    addresses by C{addressFamily} and hand each datagram to
    C{protocol.datagramReceived}, as the replacement does; and
    L{ISystemHandle.getHandle} giving the socket (checked again on each
    port once it listens: L{DatagramPort.startListening}). The checks are
    by name and signature (a cheap look at the class and its code), not a
    proof; a Twisted release that fails them makes the test suite fail.

    @param port_class: the class to check (tests give a changed one).
    @return: C{None} if L{DatagramPort} can be used, else what is not as
        expected, in words.
    """
    name = f"{port_class.__module__}.{port_class.__qualname__}"
    methods: dict[str, Any] = {}
    for method in ("__init__", "startListening", "doRead", "getHandle"):
        methods[method] = getattr(port_class, method, None)
        if not inspect.isfunction(methods[method]):
            return f"{name}.{method} is not a Python function"
    init, do_read = methods["__init__"], methods["doRead"]
    parameters = list(inspect.signature(init).parameters)
    if parameters[:6] != _INIT_PARAMETERS:
        return f"{name}.__init__ takes {parameters}, not {_INIT_PARAMETERS}"
    if not {"protocol", "maxPacketSize"} <= set(init.__code__.co_names):
        return f"{name}.__init__ no longer sets protocol and maxPacketSize"
    throughput = getattr(port_class, "maxThroughput", None)
    if type(throughput) is not int or throughput <= 0:
        return f"{name}.maxThroughput is {throughput!r}, not a positive int"
    if getattr(port_class, "addressFamily", None) not in (
        socket.AF_INET,
        socket.AF_INET6,
    ):
        return f"{name}.addressFamily is not AF_INET or AF_INET6"
    reads = {"maxThroughput", "addressFamily", "datagramReceived"}
    if not reads <= set(do_read.__code__.co_names):
        return (
            f"{name}.doRead no longer uses {', '.join(sorted(reads))} as "
            f"DatagramPort.doRead does"
        )
    if not ISystemHandle.implementedBy(port_class):
        return f"{name} does not provide ISystemHandle"
    return None


def turn_on_pktinfo(sock: socket.socket) -> tuple[int, int] | str:
    """
    Make C{recvmsg} on C{sock} give each datagram's destination address:
    C{IP_PKTINFO} on an IPv4 socket (Linux ip(7)), C{IPV6_RECVPKTINFO} on
    an IPv6 one (RFC 3542 section 6.1; on a dual-stack socket it covers
    IPv4-mapped datagrams too).

    @param sock: a UDP socket.
    @return: the C{(level, type)} of the control messages that carry the
        destination (received and, to set the source, sent), or why that
        cannot be done here, in words.
    """
    if sock.family == socket.AF_INET6:
        level, receive_option, kind = (
            socket.IPPROTO_IPV6,
            IPV6_RECVPKTINFO,
            IPV6_PKTINFO,
        )
    else:
        level, receive_option, kind = socket.IPPROTO_IP, IP_PKTINFO, IP_PKTINFO
    if receive_option is None or kind is None or not _ANCILLARY_SPACE:
        return "this platform has no packet information socket option"
    if not hasattr(sock, "recvmsg_into") or not hasattr(sock, "sendmsg"):
        return "this platform has no recvmsg/sendmsg"
    try:
        sock.setsockopt(level, receive_option, 1)
    except OSError as e:
        return f"setting packet information failed: {e}"
    return level, kind


class DatagramPort(udp.Port):
    """
    A UDP port that reads each datagram into one buffer allocated once,
    and that, bound to a wildcard address, replies from the address each
    datagram was sent to.

    What it buys: Twisted's L{udp.Port} calls C{recvfrom(maxPacketSize)},
    which allocates (and then shrinks) a 64 KiB string for every datagram
    once the read size is raised to the largest datagram (L{MAX_DATAGRAM});
    here C{recvfrom_into} reads into one preallocated buffer and only the
    datagram's own bytes are copied out. Everything else is L{udp.Port}'s.

    Bound to C{0.0.0.0} or C{::} (L{is_wildcard} of the address the socket
    is really bound to, C{getsockname()}), it turns on C{IP_PKTINFO} or
    C{IPV6_RECVPKTINFO} (L{turn_on_pktinfo}), reads with C{recvmsg_into}
    into the same buffer, and L{reply} sends with C{sendmsg} from each
    datagram's destination (L{reply_ancillary}). Where the platform lacks
    those options, it logs a warning and replies as L{udp.Port} does (the
    kernel picks the source).

    It relies on L{udp.Port} internals: use it only when
    L{datagram_port_problem} returns C{None}. If, once listening,
    C{getHandle()} is not a socket, it reads with L{udp.Port.doRead}.

    @ivar reply_from_destination: C{True} once listening on a wildcard
        address with packet information on.
    """

    _receive: Any = None
    _socket_sendto: Callable[[bytes, Any], object] | None = None
    _set_up_for: socket.socket | None = None
    reply_from_destination = False
    _receive_message: Callable[..., tuple[int, list[Ancillary], int, Any]]
    _sendmsg: Callable[..., int]
    _pktinfo: tuple[int, int]
    #: While a datagram read with packet information is being delivered:
    #: the control messages that send a reply from its destination.
    _reply_ancillary: list[Ancillary] = []

    @property
    def destination_ancillary(self) -> list[Ancillary]:
        """
        While a datagram read with packet information is being delivered
        (a wildcard port with C{reply_from_destination}): the control
        messages that send a reply from its destination, as
        L{reply_ancillary} made them; else C{[]}.
        """
        return self._reply_ancillary

    def __init__(
        self,
        port: int,
        protocol: DatagramProtocol,
        interface: str,
        maxPacketSize: int,  # noqa: N803 (udp.Port's name: _fromListeningDescriptor passes it)
        reactor: Any,
    ) -> None:
        udp.Port.__init__(self, port, protocol, interface, maxPacketSize, reactor)

    def startListening(self) -> None:
        self._buffer = memoryview(bytearray(self.maxPacketSize))
        udp.Port.startListening(self)
        self._set_up()

    def _set_up(self) -> None:
        """
        Once per socket (the protocol's C{startProtocol} may ask first, via
        L{replier}): choose how to read, and on a wildcard address turn on
        packet information.
        """
        handle = self.getHandle()  # type: ignore[no-untyped-call]
        if not isinstance(handle, socket.socket):
            self._receive = self._socket_sendto = self._set_up_for = None
            self.reply_from_destination = False
            return
        if handle is self._set_up_for:
            return
        self._set_up_for = handle
        self._receive = handle.recvfrom_into
        self._socket_sendto = handle.sendto
        self.reply_from_destination = False
        host, port = handle.getsockname()[:2]
        if not is_wildcard(host):
            return
        pktinfo = turn_on_pktinfo(handle)
        if isinstance(pktinfo, str):
            _log.warn(
                "UDP port {port} is on a wildcard address but {problem}: "
                "replies leave from the address the kernel picks, which a "
                "connected client drops if it sent to another of this "
                "host's addresses",
                port=port,
                problem=pktinfo,
            )
            return
        self.reply_from_destination = True
        self._receive_message = handle.recvmsg_into
        self._sendmsg = handle.sendmsg
        self._pktinfo = pktinfo

    def replier(self) -> Callable[[bytes, Any], object] | None:
        """
        How a protocol replies to the datagram it is being given.

        @return: on a wildcard address with packet information on,
            L{reply}; else the socket's C{sendto}; C{None} if the handle is
            not a socket (use C{write}).
        """
        self._set_up()
        if self.reply_from_destination:
            return self.reply
        return self._socket_sendto

    def reply(self, datagram: bytes, addr: Any) -> object:
        """
        Send C{datagram} to C{addr} from the destination address of the
        datagram being delivered. Only valid during the protocol's
        C{datagramReceived}; elsewhere the kernel picks the source.

        If the kernel refuses that source (C{EINVAL}: an address removed
        since, or a broadcast address an IPv4-mapped datagram was sent to),
        the datagram is sent without it, as L{udp.Port} would.

        @param datagram: the reply (C{bytes}).
        @param addr: where to, C{(host, port)}.
        @return: the number of bytes sent.
        @raise OSError: if the kernel refused the reply.
        """
        ancillary = self._reply_ancillary
        try:
            return self._sendmsg((datagram,), ancillary, 0, addr)
        except OSError as e:
            if e.errno != errno.EINVAL or not ancillary:
                raise
        return self._sendmsg((datagram,), (), 0, addr)

    def doRead(self) -> None:
        """
        Read datagrams until the socket has none or C{maxThroughput} bytes
        were read, handing each to the protocol.
        """
        if self.reply_from_destination:
            return self._read_messages()
        receive = self._receive
        if receive is None:
            return udp.Port.doRead(self)  # type: ignore[no-any-return]
        buffer = self._buffer
        deliver = self.protocol.datagramReceived
        ipv6 = self.addressFamily == socket.AF_INET6
        read = 0
        while read < self.maxThroughput:
            try:
                size, addr = receive(buffer)
            except BlockingIOError:
                return None
            except OSError:
                # Other errors: udp.Port's own handling (it reads again).
                return udp.Port.doRead(self)  # type: ignore[no-any-return]
            read += size
            if ipv6:
                addr = addr[:2]
            try:
                deliver(buffer[:size].tobytes(), addr)
            except BaseException:
                log.err()
        return None

    def _read_messages(self) -> None:
        """
        L{doRead} on a wildcard address: read each datagram with its
        destination (C{recvmsg_into}) and deliver it with
        L{_reply_ancillary} set for L{reply}.

        Errors are handled as L{udp.Port.doRead} handles them on a port
        that is not connected: C{EAGAIN} and C{ECONNREFUSED} end the read,
        others are raised (the reactor logs them and closes the port).
        """
        receive = self._receive_message
        buffer = self._buffer
        buffers = (buffer,)
        deliver = self.protocol.datagramReceived
        ipv6 = self.addressFamily == socket.AF_INET6
        level, kind = self._pktinfo
        # The reply's control messages are worked out once per destination
        # in a row, not once per datagram.
        last: bytes | None = None
        reply: list[Ancillary] = []
        read = 0
        try:
            while read < self.maxThroughput:
                try:
                    size, ancillary, _, addr = receive(buffers, _ANCILLARY_SPACE)
                except (BlockingIOError, ConnectionRefusedError):
                    return None
                read += size
                if ipv6:
                    addr = addr[:2]
                this: list[Ancillary] = []
                for item_level, item_kind, data in ancillary:
                    if item_kind == kind and item_level == level:
                        if data != last:
                            last = data
                            reply = reply_ancillary(level, kind, data)
                        this = reply
                self._reply_ancillary = this
                try:
                    deliver(buffer[:size].tobytes(), addr)
                except BaseException:
                    log.err()
        finally:
            self._reply_ancillary = []
        return None
