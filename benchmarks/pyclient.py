"""
The request/response load of loadgen.c written in Python (an asyncio Protocol,
on uvloop or on asyncio's own loop), to show why the benchmarks' load
generator is in C.

    python benchmarks/pyclient.py --port P --conns 50 --size 1024 --duration 3 \
        [--loop asyncio|uvloop]

N connections each send SIZE bytes and wait for the whole echo before the next
request; replies are verified. Prints one JSON object like loadgen's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time


class Client(asyncio.Protocol):
    def __init__(self, size: int, stats: dict) -> None:
        self.request = bytes(97 + i % 26 for i in range(size))
        self.stats = stats
        self.received = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.received += data
        if len(self.received) < len(self.request):
            return
        if self.received != self.request:
            self.stats["mismatches"] += 1
        self.received.clear()
        if self.stats["measuring"]:
            self.stats["ops"] += 1
        if not self.stats["stop"]:
            self.transport.write(self.request)  # type: ignore[attr-defined]


async def main(a: argparse.Namespace) -> dict:
    loop = asyncio.get_running_loop()
    stats = {"ops": 0, "mismatches": 0, "measuring": False, "stop": False}
    conns = [
        await loop.create_connection(lambda: Client(a.size, stats), "127.0.0.1", a.port)
        for _ in range(a.conns)
    ]
    await asyncio.sleep(a.warmup)
    stats["measuring"] = True
    t0, cpu0 = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(a.duration)
    stats["measuring"] = False
    wall, cpu1 = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_SELF)
    stats["stop"] = True
    for transport, _ in conns:
        transport.close()
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    return {
        "mode": "python-rr",
        "conns": a.conns,
        "size": a.size,
        "seconds": round(wall, 3),
        "ops": stats["ops"],
        "ops_per_s": round(stats["ops"] / wall, 1),
        "mismatches": stats["mismatches"],
        "errors": 0,
        "gen_cpu": round(cpu / wall, 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        print(json.dumps(uvloop.run(main(args))))
    else:
        print(json.dumps(asyncio.run(main(args))))
