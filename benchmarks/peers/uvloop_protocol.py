"""uvloop peer: the asyncio Protocol peer's very code, on uvloop's event loop.

    python uvloop_protocol.py --echo 9000 --upper 9001 --welcome 9002 --udp 9000
"""

import uvloop
from asyncio_protocol import parse_args, serve

if __name__ == "__main__":
    uvloop.run(serve(parse_args()))
