"""websockets peer: a WebSocket echo server on the `websockets` library's
asyncio implementation (PyPI `websockets`), its defaults kept (1 MiB
messages, permessage-deflate offered but the benchmark's client does not ask
for it).

    python websockets_echo.py --websocket 9000
"""

import argparse
import asyncio

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


async def echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


async def main(port: int) -> None:
    async with serve(echo, "127.0.0.1", port) as server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--websocket", type=int, required=True)
    asyncio.run(main(ap.parse_args().websocket))
