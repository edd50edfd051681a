"""aiohttp peer: a WebSocket echo server on aiohttp's web server
(`web.WebSocketResponse`), its defaults kept (4 MiB messages, no
compression asked for by the benchmark's client). aiohttp's WebSocket
reader is its C-accelerated one when the wheel has it.

    python aiohttp_echo.py --websocket 9000
"""

import argparse

from aiohttp import WSMsgType, web


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type is WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--websocket", type=int, required=True)
    app = web.Application()
    app.router.add_get("/", echo)
    web.run_app(app, host="127.0.0.1", port=ap.parse_args().websocket, print=None,
                access_log=None)
