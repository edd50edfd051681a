"""asyncio peer, Protocol style (the asyncio docs' echo server design).

Serves echo, upper and welcome over TCP and echo over UDP, each on 127.0.0.1
at the port given; a service whose port is not given is not served.

    python asyncio_protocol.py --echo 9000 --upper 9001 --welcome 9002 --udp 9000
"""

import argparse
import asyncio

BANNER = b"Welcome to the server. Type something and hit enter\r\n"


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class Upper(Echo):
    def data_received(self, data):
        self.transport.write(data.upper())


class Welcome(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""
        transport.write(BANNER)

    def data_received(self, data):
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        for line in lines:
            self.transport.write(b"OK..." + line.rstrip(b"\r") + b"\r\n")


class UDPEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


async def serve(args):
    loop = asyncio.get_running_loop()
    for port, protocol in ((args.echo, Echo), (args.upper, Upper), (args.welcome, Welcome)):
        if port:
            await loop.create_server(protocol, "127.0.0.1", port)
    if args.udp:
        await loop.create_datagram_endpoint(UDPEcho, local_addr=("127.0.0.1", args.udp))
    await asyncio.Event().wait()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("echo", "upper", "welcome", "udp"):
        parser.add_argument(f"--{name}", type=int, metavar="PORT")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(serve(parse_args()))
