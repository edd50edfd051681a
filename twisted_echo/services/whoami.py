# -*- test-case-name: tests.test_whoami -*-
"""
Whoami: tells a client how the server sees it, as one line of JSON.

Over TCP (C{tcp:}, C{tcp6:}, C{unix:}, C{ssl:}) the server sends one JSON
object on one UTF-8 line ended by C{\\n}, then closes cleanly; what the
client sends is ignored. Over TLS the line is sent once the handshake is
done, so that it can name the protocol version, cipher and SNI name. Over
UDP each datagram is answered with the same JSON as one datagram, after
UDP echo's checks (loop guard, then the rate limits; see
L{twisted_echo.services.udp}).

The object's fields (L{WhoamiInfo.describe}):
 - C{service}: C{"whoami"};
 - C{client}, C{client_host}, C{client_port}: the client's address as the
   service sees it (an endpoint string such as C{tcp:127.0.0.1:40000}, and
   its host and port; L{None} where there is none, e.g. an unnamed UNIX
   socket);
 - C{proxy}, C{proxy_host}, C{proxy_port}: the address of the proxy the
   connection came through, when one said who the client is (PROXY
   protocol); else L{None};
 - C{local}, C{local_host}, C{local_port}: the address the client reached;
 - C{host}: this machine's host name; C{pid}: the serving process's id;
 - C{worker}: the worker's number with C{--workers}, else L{None};
 - C{version}: sockecho's version;
 - C{tls}: L{None}, or over TLS C{{"version", "cipher", "sni"}}.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from OpenSSL import SSL
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IHandshakeListener, ISSLTransport
from zope.interface import implementer

from twisted_echo import __version__
from twisted_echo.listening.address import describe_address
from twisted_echo.listening.datagram import DatagramPort
from twisted_echo.services.stream import StreamFactory, StreamProtocol
from twisted_echo.services.udp import UDPEcho

#: The service's name, in logs, counters and the JSON.
SERVICE_NAME = "whoami"
#: The environment variable a worker's orders are in (see
#: L{twisted_echo.app.supervisor.WORKER_ENV}); its JSON has the worker's
#: C{"number"}.
WORKER_ENV = "SOCKECHO_WORKER"


def worker_number(environ: dict[str, str] | None = None) -> int | None:
    """
    @param environ: the environment to read (default: C{os.environ}).
    @return: this process's worker number under C{--workers} (from its
        orders, L{WORKER_ENV}), or L{None} when it is not a worker.
    """
    orders = (os.environ if environ is None else environ).get(WORKER_ENV)
    if not orders:
        return None
    try:
        number = json.loads(orders).get("number")
    except (ValueError, AttributeError):
        return None
    return number if isinstance(number, int) else None


def address_fields(address: object) -> tuple[str | None, str | None, int | None]:
    """
    @param address: a transport address (IPv4, IPv6, UNIX, TLS-marked), or
        L{None}.
    @return: C{(endpoint string, host, port)}: e.g.
        C{("tcp:127.0.0.1:40000", "127.0.0.1", 40000)};
        C{("unix:/run/s.sock", None, None)}; all L{None} for L{None} or an
        unnamed UNIX socket.
    """
    if address is None:
        return None, None, None
    if isinstance(address, UNIXAddress):
        if not address.name:
            return None, None, None
        return describe_address(address), None, None
    if isinstance(address, IPv4Address | IPv6Address):
        return describe_address(address), address.host, address.port
    return describe_address(address), None, None


def datagram_address(addr: Any) -> IPv4Address | IPv6Address:
    """
    @param addr: a UDP peer as C{datagramReceived} gives it, C{(host, port)}.
    @return: it as a Twisted address, so that it is written C{udp:HOST:PORT}.
    """
    host, port = addr[0], addr[1]
    if ":" in host:
        return IPv6Address("UDP", host, port)
    return IPv4Address("UDP", host, port)


def tls_fields(transport: object) -> dict[str, str | None] | None:
    """
    @param transport: a connection's transport.
    @return: C{{"version", "cipher", "sni"}} of its TLS connection (e.g.
        C{"TLSv1.3"}, C{"TLS_AES_256_GCM_SHA384"}, C{"localhost"}; C{sni}
        L{None} when the client named no server), or L{None} when it is
        not TLS.
    """
    get_handle = getattr(transport, "getHandle", None)
    handle = get_handle() if get_handle is not None else None
    if not isinstance(handle, SSL.Connection):
        return None
    name = handle.get_servername()
    return {
        "version": handle.get_protocol_version_name(),
        "cipher": handle.get_cipher_name(),
        "sni": name.decode("ascii", "replace") if name else None,
    }


class WhoamiInfo:
    """
    What every whoami answer of one server shares: who the server is.

    @ivar worker: the worker number (L{worker_number}), or L{None}.
    @ivar version: sockecho's version.
    """

    def __init__(self, worker: int | None = None, version: str = __version__) -> None:
        self.worker = worker
        self.version = version

    def describe(
        self,
        client: object,
        local: object,
        proxy: object = None,
        tls: dict[str, str | None] | None = None,
    ) -> dict[str, Any]:
        """
        @param client: the client's address as the service sees it.
        @param local: the address the client reached.
        @param proxy: the proxy's own address, or L{None}.
        @param tls: L{tls_fields} of the connection, or L{None}.
        @return: the answer's fields, in order (see the module docstring).
        """
        fields: dict[str, Any] = {"service": SERVICE_NAME}
        for name, address in (("client", client), ("proxy", proxy), ("local", local)):
            text, host, port = address_fields(address)
            fields[name] = text
            fields[f"{name}_host"] = host
            fields[f"{name}_port"] = port
        fields["host"] = socket.gethostname()
        # Read at each answer: a daemon forks after the service is built.
        fields["pid"] = os.getpid()
        fields["worker"] = self.worker
        fields["version"] = self.version
        fields["tls"] = tls
        return fields

    def encode(self, fields: dict[str, Any]) -> bytes:
        """
        @return: C{fields} as one line of JSON, UTF-8, ended by C{\\n}.
        """
        text = json.dumps(fields, ensure_ascii=False, separators=(", ", ": "))
        return text.encode("utf-8") + b"\n"


@implementer(IHandshakeListener)
class Whoami(StreamProtocol):
    """
    Sends the client one JSON line about the connection, then closes
    (after the TLS handshake on a TLS connection); input is ignored.

    The addresses come from L{StreamProtocol.client_address} and
    L{StreamProtocol.proxy_address} (a PROXY header's client and the proxy
    on C{haproxy:} listeners, else the peer and L{None}) and
    L{local_address}.
    """

    factory: WhoamiFactory

    def on_open(self) -> None:
        """
        Answer, or on TLS wait for the handshake (L{handshakeCompleted}).
        """
        if not ISSLTransport.providedBy(self.transport):
            self.answer()

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake is done: answer, naming the TLS parameters.
        """
        self.answer()

    def local_address(self) -> object:
        """
        @return: the address the client reached.
        """
        return self.transport.getHost()  # type: ignore[union-attr]

    def answer(self) -> None:
        """
        Send the JSON line, then close once it is sent.
        """
        if self.closing or self.transport is None:
            return
        info = self.factory.info
        fields = info.describe(
            self.client_address(),
            self.local_address(),
            self.proxy_address(),
            tls_fields(self.transport),
        )
        self.send(info.encode(fields))
        self.close()

    def handle_data(self, data: bytes) -> None:
        """
        Ignore what the client sends (C{data}, bytes).
        """


class WhoamiFactory(StreamFactory):
    """
    Builds L{Whoami} protocols.

    @ivar info: the L{WhoamiInfo} every answer shares.
    """

    protocol = Whoami
    service_name = SERVICE_NAME

    def __init__(self, *args: Any, info: WhoamiInfo | None = None, **kw: Any) -> None:
        """
        @param args: L{StreamFactory}'s arguments.
        @param info: who the server is; default: a L{WhoamiInfo} with no
            worker number.
        @param kw: L{StreamFactory}'s keyword arguments.
        """
        StreamFactory.__init__(self, *args, **kw)
        self.info = info if info is not None else WhoamiInfo()


class WhoamiUDP(UDPEcho):
    """
    Answers each datagram with the whoami JSON (one datagram), after the
    same checks as L{UDPEcho}, in the same order: the loop guard, the
    per-source rate limit, the global rate limit.

    @ivar info: the L{WhoamiInfo} every answer shares.
    """

    def __init__(self, *args: Any, info: WhoamiInfo | None = None, **kw: Any) -> None:
        """
        @param args: L{UDPEcho}'s arguments.
        @param info: who the server is; default: a L{WhoamiInfo} with no
            worker number.
        @param kw: L{UDPEcho}'s keyword arguments.
        """
        UDPEcho.__init__(self, *args, **kw)
        self.info = info if info is not None else WhoamiInfo()

    def local_address(self) -> object:
        """
        Only valid while a datagram is delivered (in L{UDPEcho.datagramReceived}).

        @return: the address the datagram was sent to: on a L{DatagramPort}
            bound to a wildcard address, the destination the kernel gave
            with it (C{IP_PKTINFO}, C{IPV6_PKTINFO}); else the address the
            port is bound to.
        """
        transport = self.transport
        get_host = getattr(transport, "getHost", None)
        bound = get_host() if get_host is not None else None
        if bound is None or not (
            isinstance(transport, DatagramPort) and transport.reply_from_destination
        ):
            return bound
        for level, _, data in transport.destination_ancillary:
            # As reply_ancillary made them: IPv4 (interface index, local
            # address, header destination); IPv6 (destination, index).
            if level == socket.IPPROTO_IP and len(data) >= 12:
                host = socket.inet_ntop(socket.AF_INET, data[8:12])
                return IPv4Address("UDP", host, bound.port)
            if level == socket.IPPROTO_IPV6 and len(data) >= 16:
                host = socket.inet_ntop(socket.AF_INET6, data[:16])
                return IPv6Address("UDP", host, bound.port)
        return bound

    def reply_for(self, datagram: bytes, addr: Any) -> bytes:
        """
        @param datagram: a datagram that passed UDP echo's checks (loop
            guard, rate limits).
        @param addr: its sender, C{(host, port)}.
        @return: the whoami JSON for that sender, as one datagram.
        """
        info = self.info
        return info.encode(info.describe(datagram_address(addr), self.local_address()))
