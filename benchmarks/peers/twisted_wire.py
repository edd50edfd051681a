"""Twisted's plain twisted.protocols.wire.Echo on TCP, and the Twisted docs'
UDP echo (a DatagramProtocol writing each datagram back), on 127.0.0.1.

    python twisted_wire.py --echo 9000 --udp 9000
"""

import argparse

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.protocols.wire import Echo


class UDPEcho(DatagramProtocol):
    def datagramReceived(self, data, addr):
        self.transport.write(data, addr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--echo", type=int, metavar="PORT")
    parser.add_argument("--udp", type=int, metavar="PORT")
    args = parser.parse_args()
    if args.echo:
        reactor.listenTCP(args.echo, Factory.forProtocol(Echo), interface="127.0.0.1")
    if args.udp:
        reactor.listenUDP(args.udp, UDPEcho(), interface="127.0.0.1")
    reactor.run()
