"""asyncio peer, streams style (asyncio.start_server, the docs' streams echo).

Serves echo, upper and welcome over TCP, and echo over UDP (asyncio has no
datagram streams: a DatagramProtocol), each on 127.0.0.1 at the port given.

    python asyncio_streams.py --echo 9000 --upper 9001 --welcome 9002 --udp 9000
"""

import argparse
import asyncio

BANNER = b"Welcome to the server. Type something and hit enter\r\n"


async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def upper(reader, writer):
    while data := await reader.read(65536):
        writer.write(data.upper())
        await writer.drain()
    writer.close()


async def welcome(reader, writer):
    writer.write(BANNER)
    while line := await reader.readline():
        writer.write(b"OK..." + line.rstrip(b"\r\n") + b"\r\n")
        await writer.drain()
    writer.close()


class UDPEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


async def serve(args):
    for port, handler in ((args.echo, echo), (args.upper, upper), (args.welcome, welcome)):
        if port:
            await asyncio.start_server(handler, "127.0.0.1", port)
    if args.udp:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(UDPEcho, local_addr=("127.0.0.1", args.udp))
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("echo", "upper", "welcome", "udp"):
        parser.add_argument(f"--{name}", type=int, metavar="PORT")
    asyncio.run(serve(parser.parse_args()))
